package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// volumeProgress is the "progress" of GET /v1/volumes/{id}.
type volumeProgress struct {
	Phase      string `json:"phase"`
	BytesDone  int64  `json:"bytes_done"`
	BytesTotal int64  `json:"bytes_total"`
}

// volumeStatus is a volume as GET /v1/volumes/{id} returns it: every field as a map, for the
// final line, and the progress typed, for the display.
type volumeStatus struct {
	fields   map[string]any
	Progress *volumeProgress
}

// UnmarshalJSON decodes the body into both views.
func (v *volumeStatus) UnmarshalJSON(b []byte) error {
	var typed struct {
		Progress *volumeProgress `json:"progress"`
	}
	if err := json.Unmarshal(b, &typed); err != nil {
		return err
	}
	v.Progress = typed.Progress
	return json.Unmarshal(b, &v.fields)
}

// plainEvery is how often a progress line is printed when stderr is not a terminal.
const plainEvery = 2 * time.Second

// progress shows a waiting provision: one line rewritten in place on a terminal, plain lines
// now and then otherwise (logs and pipes must not fill with carriage returns).
type progress struct {
	w    io.Writer
	tty  bool
	rate float64 // bytes per second, smoothed

	last      volumeProgress // previous reading
	lastAt    time.Time
	printedAt time.Time
	printed   string // phase of the last plain line
	drawn     bool   // a terminal line is on screen
}

func newProgress(w *os.File) *progress {
	fi, err := w.Stat()
	// A character device is a terminal here; /dev/null is one too, but nobody sees it.
	return &progress{w: w, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

// show takes one reading of the provision's progress (nil while the gateway cannot tell).
func (p *progress) show(now time.Time, id string, cur *volumeProgress) {
	if cur == nil {
		cur = &volumeProgress{Phase: "creating"}
	}
	switch {
	case cur.Phase != p.last.Phase || cur.BytesDone < p.last.BytesDone:
		// A new step (or a restarted download) moves other bytes: the old rate says nothing.
		p.rate = 0
	case now.Sub(p.lastAt) > 0 && cur.BytesDone > p.last.BytesDone:
		r := float64(cur.BytesDone-p.last.BytesDone) / now.Sub(p.lastAt).Seconds()
		if p.rate == 0 {
			p.rate = r
		} else {
			// Heartbeats arrive about once a second and polls more often: smooth the steps.
			p.rate = 0.7*p.rate + 0.3*r
		}
	}
	if cur.BytesDone != p.last.BytesDone || cur.Phase != p.last.Phase || p.lastAt.IsZero() {
		p.last, p.lastAt = *cur, now
	}
	line := fmt.Sprintf("volume %s: %s", id, cur.Phase)
	if cur.BytesTotal > 0 {
		line += fmt.Sprintf(" %s / %s (%d%%)", mib(cur.BytesDone), mib(cur.BytesTotal), cur.BytesDone*100/cur.BytesTotal)
	} else if cur.BytesDone > 0 {
		line += " " + mib(cur.BytesDone)
	}
	if p.rate > 0 {
		line += fmt.Sprintf(" %.1f MiB/s", p.rate/(1<<20))
	}
	if p.tty {
		// \r and erase-to-end-of-line: rewrite the line in place.
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn = true
		return
	}
	if cur.Phase != p.printed || now.Sub(p.printedAt) >= plainEvery {
		fmt.Fprintln(p.w, line)
		p.printed, p.printedAt = cur.Phase, now
	}
}

// done clears the terminal line so the final result starts on a clean line.
func (p *progress) done() {
	if p.tty && p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
