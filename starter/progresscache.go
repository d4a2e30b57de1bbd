package starter

import (
	"sync"
	"time"
)

// progressMaxAge is how long a provision's progress read from Temporal answers status requests.
// A download heartbeats its progress once a second, so a fresher read shows nothing new; a
// client polling many times a second (a boot storm's orchestrator) then costs Temporal one
// read a second per provision, not one per poll.
const progressMaxAge = time.Second

// progressCache keeps the last progress read of each running provision for progressMaxAge.
type progressCache struct {
	mu    sync.Mutex
	reads map[string]progressRead // by workflow ID
}

// progressRead is one read of a provision's progress, at a time.
type progressRead struct {
	progress *Progress
	fill     string
	at       time.Time
}

// get returns the read of workflowID made less than progressMaxAge before now, if any.
func (c *progressCache) get(workflowID string, now time.Time) (progressRead, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r, ok := c.reads[workflowID]
	if !ok || now.Sub(r.at) >= progressMaxAge || now.Before(r.at) {
		return progressRead{}, false
	}
	return r, true
}

// put keeps a read, and drops the expired ones now and then so that the provisions that
// finished do not stay.
func (c *progressCache) put(workflowID string, r progressRead) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reads == nil {
		c.reads = map[string]progressRead{}
	}
	if len(c.reads) >= 256 {
		for id, old := range c.reads {
			if r.at.Sub(old.at) >= progressMaxAge {
				delete(c.reads, id)
			}
		}
	}
	c.reads[workflowID] = r
}
