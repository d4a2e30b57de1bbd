package starter

import (
	"container/list"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// CodeTooManyAuthFailures is the error code of a request refused because its client address
// failed authentication too often.
const CodeTooManyAuthFailures = "too_many_auth_failures"

// maxTrackedClients bounds the limiter's memory: past it, the client whose bucket was touched
// least recently is forgotten (it starts again with a full allowance).
const maxTrackedClients = 10000

// AuthFailureLimiter rate-limits failed authentications per client address with a token
// bucket: each address may fail PerMinute times in a burst and PerMinute times a minute after
// that; once its bucket is empty every request from it gets 429 with Retry-After until a token
// refills. Only failures (answers 401) take tokens, so a client with a good token is never
// slowed down by its own traffic. Addresses are the connection's (a proxy in front makes all
// its clients one address); IPv6 addresses count per /64, which one host usually holds whole.
type AuthFailureLimiter struct {
	perMinute  int
	maxClients int
	now        func() time.Time

	mu      sync.Mutex
	clients map[string]*list.Element // of *bucket
	lru     *list.List               // front: touched most recently
}

// bucket is one client address's allowance of failures at a moment.
type bucket struct {
	key    string
	tokens float64
	at     time.Time
}

// NewAuthFailureLimiter returns a limiter allowing perMinute failed authentications per client
// address a minute (and in a burst); perMinute <= 0 returns nil, which limits nothing.
func NewAuthFailureLimiter(perMinute int) *AuthFailureLimiter {
	if perMinute <= 0 {
		return nil
	}
	return &AuthFailureLimiter{
		perMinute: perMinute, maxClients: maxTrackedClients, now: time.Now,
		clients: map[string]*list.Element{}, lru: list.New(),
	}
}

// Wrap puts the limiter in front of next. A nil limiter returns next.
func (l *AuthFailureLimiter) Wrap(next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := clientKey(r.RemoteAddr)
		if wait, ok := l.allow(key); !ok {
			secs := max(1, int(math.Ceil(wait.Seconds())))
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			ae := apiErr(http.StatusTooManyRequests, CodeTooManyAuthFailures, "too many failed authentications from this address; retry in %d s", secs)
			if strings.HasPrefix(r.URL.Path, "/v3/") {
				writeCinderError(w, ae)
			} else {
				writeError(w, ae)
			}
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if rec.status == http.StatusUnauthorized {
			l.fail(key)
		}
	})
}

// rate is the refill in tokens per second.
func (l *AuthFailureLimiter) rate() float64 { return float64(l.perMinute) / 60 }

// refill brings b up to now and marks it most recently used; l.mu is held.
func (l *AuthFailureLimiter) refill(e *list.Element, now time.Time) *bucket {
	b := e.Value.(*bucket)
	if elapsed := now.Sub(b.at); elapsed > 0 {
		b.tokens = min(float64(l.perMinute), b.tokens+elapsed.Seconds()*l.rate())
		b.at = now
	}
	l.lru.MoveToFront(e)
	return b
}

// allow says whether key may make a request now, and if not how long until it may.
func (l *AuthFailureLimiter) allow(key string) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.clients[key]
	if !ok {
		return 0, true // never failed, or forgotten: a full bucket
	}
	b := l.refill(e, l.now())
	if b.tokens >= 1 {
		return 0, true
	}
	return time.Duration((1 - b.tokens) / l.rate() * float64(time.Second)), false
}

// fail takes one token from key's bucket, creating it full first.
func (l *AuthFailureLimiter) fail(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	e, ok := l.clients[key]
	if !ok {
		for l.lru.Len() >= l.maxClients {
			oldest := l.lru.Back()
			delete(l.clients, oldest.Value.(*bucket).key)
			l.lru.Remove(oldest)
		}
		e = l.lru.PushFront(&bucket{key: key, tokens: float64(l.perMinute), at: now})
		l.clients[key] = e
	}
	// Requests that passed allow together may all fail: the bucket goes below zero and the
	// address waits longer, rather than having its extra failures forgiven.
	l.refill(e, now).tokens--
}

// clientKey is the limiter's key of a connection's remote address: the IP, an IPv6 one cut to
// its /64; the address itself when it does not parse (a Unix socket, a test).
func clientKey(remoteAddr string) string {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.WithZone("").Prefix(64)
	return p.String()
}
