package starter

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// fakeClock is the limiter's clock in tests: it moves only when told.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// step is one request of a limiter test case.
type step struct {
	after      time.Duration // clock advance before the request
	addr       string
	bad        bool // the request carries a token the handler refuses (401)
	wantStatus int
	wantRetry  string // Retry-After, when 429
}

func TestAuthFailureLimiter(t *testing.T) {
	const a, b = "192.0.2.1:5000", "192.0.2.2:5000"
	cases := []struct {
		name      string
		perMinute int
		steps     []step
	}{
		{
			name: "successes never count", perMinute: 2,
			steps: []step{
				{addr: a, wantStatus: 200}, {addr: a, wantStatus: 200}, {addr: a, wantStatus: 200}, {addr: a, wantStatus: 200},
			},
		},
		{
			name: "a burst of failures, then 429 until a token refills", perMinute: 2,
			steps: []step{
				{addr: a, bad: true, wantStatus: 401},
				{addr: a, bad: true, wantStatus: 401},
				// Empty: even a good token waits. One token takes 30 s at 2 a minute.
				{addr: a, wantStatus: 429, wantRetry: "30"},
				{after: 20 * time.Second, addr: a, bad: true, wantStatus: 429, wantRetry: "10"},
				// Another address is not affected.
				{addr: b, bad: true, wantStatus: 401},
				{after: 10 * time.Second, addr: a, bad: true, wantStatus: 401},
				{addr: a, wantStatus: 429, wantRetry: "30"},
				// A minute refills the whole burst, no more.
				{after: 5 * time.Minute, addr: a, bad: true, wantStatus: 401},
				{addr: a, bad: true, wantStatus: 401},
				{addr: a, bad: true, wantStatus: 429, wantRetry: "30"},
			},
		},
		{
			name: "ports of one address share a bucket, an IPv6 /64 too", perMinute: 1,
			steps: []step{
				{addr: "192.0.2.9:1", bad: true, wantStatus: 401},
				{addr: "192.0.2.9:2", wantStatus: 429, wantRetry: "60"},
				{addr: "[2001:db8:1:2::1]:1", bad: true, wantStatus: 401},
				{addr: "[2001:db8:1:2:ffff::9]:7", wantStatus: 429, wantRetry: "60"},
				{addr: "[2001:db8:1:3::1]:1", wantStatus: 200},
			},
		},
		{
			name: "sub-second wait rounds up to 1 s", perMinute: 60,
			steps: append(repeat(60, step{addr: a, bad: true, wantStatus: 401}),
				step{addr: a, wantStatus: 429, wantRetry: "1"},
				step{after: 500 * time.Millisecond, addr: a, wantStatus: 429, wantRetry: "1"},
				step{after: 500 * time.Millisecond, addr: a, wantStatus: 200},
			),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			l := NewAuthFailureLimiter(tc.perMinute)
			l.now = clock.now
			h := l.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Auth-Token") != "good" {
					writeError(w, apiErr(http.StatusUnauthorized, "unauthorized", "bad token"))
					return
				}
				w.WriteHeader(http.StatusOK)
			}))
			for i, s := range tc.steps {
				clock.advance(s.after)
				r := httptest.NewRequest(http.MethodGet, "/v1/volumes", nil)
				r.RemoteAddr = s.addr
				r.Header.Set("X-Auth-Token", "good")
				if s.bad {
					r.Header.Set("X-Auth-Token", "bad")
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != s.wantStatus {
					t.Fatalf("step %d (%s): status %d, want %d", i, s.addr, rec.Code, s.wantStatus)
				}
				if got := rec.Header().Get("Retry-After"); got != s.wantRetry {
					t.Errorf("step %d: Retry-After %q, want %q", i, got, s.wantRetry)
				}
				if s.wantStatus == http.StatusTooManyRequests {
					var body struct{ Error APIError }
					if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != CodeTooManyAuthFailures {
						t.Errorf("step %d: body %s (%v)", i, rec.Body, err)
					}
				}
			}
		})
	}
}

func repeat(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// The limiter remembers at most maxClients addresses, forgetting the least recently touched.
func TestAuthFailureLimiterBounded(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewAuthFailureLimiter(1)
	l.now, l.maxClients = clock.now, 100
	for i := range 1000 {
		l.fail(fmt.Sprintf("198.51.100.%d/%d", i%250, i))
	}
	if len(l.clients) != 100 || l.lru.Len() != 100 {
		t.Fatalf("%d clients tracked (%d in the list), want 100", len(l.clients), l.lru.Len())
	}
	// The newest is still limited; the first was forgotten and has its full allowance back.
	if _, ok := l.allow(fmt.Sprintf("198.51.100.%d/%d", 999%250, 999)); ok {
		t.Error("the most recent failure was forgotten")
	}
	if _, ok := l.allow("198.51.100.0/0"); !ok {
		t.Error("the oldest address is still tracked")
	}
}

func TestAuthFailureLimiterOff(t *testing.T) {
	if l := NewAuthFailureLimiter(0); l != nil {
		t.Fatalf("perMinute 0: %+v, want nil (no limit)", l)
	}
	h := (*AuthFailureLimiter)(nil).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	}))
	for i := range 100 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/volumes", nil))
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("request %d: %d, want every failure answered 401", i, rec.Code)
		}
	}
}

// A Cinder client gets the 429 in Cinder's error shape.
func TestAuthFailureLimiterCinderShape(t *testing.T) {
	l := NewAuthFailureLimiter(1)
	l.fail(clientKey("192.0.2.1:1"))
	r := httptest.NewRequest(http.MethodGet, "/v3/p/volumes/detail", nil)
	r.RemoteAddr = "192.0.2.1:2"
	rec := httptest.NewRecorder()
	l.Wrap(http.NotFoundHandler()).ServeHTTP(rec, r)
	var body map[string]CinderFault
	if err := json.Unmarshal(rec.Body.Bytes(), &body); rec.Code != http.StatusTooManyRequests || err != nil || body["overLimit"].Code != 429 {
		t.Errorf("got %d %s", rec.Code, rec.Body)
	}
}
