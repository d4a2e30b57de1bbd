package starter

import (
	"net/http"
	"time"
)

// waitSlack is what a waiting handler needs besides its wait: Temporal calls before and after
// it, and writing the answer.
const waitSlack = 30 * time.Second

// allowWait gives a request that waits on a workflow (an eviction, a warm-up with ?wait=true, a
// retry waiting for the last run to close) read and write deadlines of its own, wait plus
// waitSlack from now, in place of the server's gateway.read_timeout and write_timeout, which fit
// the other requests. The read deadline matters too: net/http cancels a request's context when
// the connection's read deadline passes while its handler runs. Writers that cannot set
// deadlines (a test recorder) are left as they are.
func allowWait(w http.ResponseWriter, wait time.Duration) {
	rc := http.NewResponseController(w)
	until := time.Now().Add(wait + waitSlack)
	_ = rc.SetReadDeadline(until)
	_ = rc.SetWriteDeadline(until)
}
