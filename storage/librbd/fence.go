package librbd

import (
	"encoding/json"
	"fmt"
	"strings"
)

// ClientAddr is this connection's address as the cluster knows it (rados_getaddrs), the one to
// blocklist to fence it. A worker publishes it so that its successor can fence it after a crash.
func (c *Cluster) ClientAddr() (string, error) {
	addr, err := c.conn.GetAddrs()
	if err != nil {
		return "", fmt.Errorf("rbd: client address: %w", err)
	}
	return addr, nil
}

// Blocklist fences the Ceph client at addr (as ClientAddr gave it) for expireSeconds: the OSDs
// refuse its I/O and drop its watches at once. A client killed with its images open holds their
// exclusive locks until its watches time out (30 s); fenced, its locks are broken by the next
// writer right away. Fencing a live client stops all of its I/O, so callers fence only a client
// whose process they know to be gone.
func (c *Cluster) Blocklist(addr string, expireSeconds int) error {
	for _, a := range splitAddrs(addr) {
		cmd, err := json.Marshal(map[string]any{
			// The monitor reads expire as a float and refuses a JSON integer.
			"prefix": "osd blocklist", "blocklistop": "add", "addr": a, "expire": json.Number(fmt.Sprintf("%d.0", expireSeconds)),
		})
		if err != nil {
			return err
		}
		if _, status, err := c.conn.MonCommand(cmd); err != nil {
			return fmt.Errorf("rbd: blocklist %s: %w: %s", a, err, status)
		}
	}
	return nil
}

// splitAddrs turns rados_getaddrs's "[v2:ip:port/nonce,v1:ip:port/nonce]" (or a single address)
// into addresses the blocklist command takes, without the protocol prefix; both entries of a
// pair name the same client, so either is enough, and duplicates are dropped.
func splitAddrs(s string) []string {
	s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "["), "]")
	seen := map[string]bool{}
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		a = strings.TrimPrefix(strings.TrimPrefix(a, "v2:"), "v1:")
		if a == "" || seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, a)
	}
	return out
}
