package starter

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
)

// fakeKeystone answers lookups from a table and counts them.
type fakeKeystone struct {
	mu     sync.Mutex
	tokens map[string]tokenInfo
	err    error // returned for every lookup when set
	calls  int
}

func (f *fakeKeystone) lookup(_ context.Context, token string) (tokenInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return tokenInfo{}, f.err
	}
	info, ok := f.tokens[token]
	if !ok {
		return tokenInfo{}, apiErr(http.StatusUnauthorized, CodeInvalidToken, "the token is invalid, expired or revoked")
	}
	return info, nil
}

func (f *fakeKeystone) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.calls }

// clock is a settable time for the cache.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestValidator(f *fakeKeystone, o KeystoneOptions) (*KeystoneValidator, *clock) {
	v := newKeystoneValidator(f.lookup, o)
	c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	v.now = c.now
	return v, c
}

func wantAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code {
		t.Fatalf("error %v, want %d %s", err, status, code)
	}
}

func TestKeystoneCacheTTL(t *testing.T) {
	f := &fakeKeystone{tokens: map[string]tokenInfo{}}
	v, c := newTestValidator(f, KeystoneOptions{CacheTTL: time.Minute})
	f.tokens["tok-a"] = tokenInfo{ProjectID: "p-a", Role: RoleReader, ExpiresAt: c.t.Add(time.Hour)}
	for i := 0; i < 3; i++ {
		p, err := v.ValidateToken(context.Background(), "tok-a")
		// The role comes back from the cache with the project.
		if err != nil || p.Project != "p-a" || p.Role != RoleReader {
			t.Fatalf("validate %d: %q, %v", i, p, err)
		}
	}
	if n := f.count(); n != 1 {
		t.Fatalf("%d lookups for 3 validations within the TTL, want 1", n)
	}
	if hits, misses := v.CacheStats(); hits != 2 || misses != 1 {
		t.Fatalf("stats hits %d misses %d, want 2 and 1", hits, misses)
	}
	// The token is revoked in Keystone: the cache still answers until the TTL is over.
	delete(f.tokens, "tok-a")
	c.t = c.t.Add(59 * time.Second)
	if p, err := v.ValidateToken(context.Background(), "tok-a"); err != nil || p.Project != "p-a" {
		t.Fatalf("within the TTL: %q, %v", p, err)
	}
	c.t = c.t.Add(time.Second)
	_, err := v.ValidateToken(context.Background(), "tok-a")
	wantAPIError(t, err, http.StatusUnauthorized, CodeInvalidToken)
	if n := f.count(); n != 2 {
		t.Fatalf("%d lookups, want 2 (one after the TTL)", n)
	}
}

func TestKeystoneCacheStopsAtTokenExpiry(t *testing.T) {
	f := &fakeKeystone{tokens: map[string]tokenInfo{}}
	v, c := newTestValidator(f, KeystoneOptions{CacheTTL: time.Minute})
	f.tokens["short"] = tokenInfo{ProjectID: "p", ExpiresAt: c.t.Add(10 * time.Second)}
	f.tokens["over"] = tokenInfo{ProjectID: "p", ExpiresAt: c.t.Add(-time.Second)} // clocks apart
	for _, tok := range []string{"short", "over"} {
		if _, err := v.ValidateToken(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n != 1 {
		t.Fatalf("%d cached, want 1: a token already past its expiry is not kept", n)
	}
	c.t = c.t.Add(10 * time.Second)
	if _, err := v.ValidateToken(context.Background(), "short"); err != nil {
		t.Fatal(err)
	}
	if n := f.count(); n != 3 {
		t.Fatalf("%d lookups, want 3: the entry ends with the token, before the TTL", n)
	}
}

func TestKeystoneFailuresNotCached(t *testing.T) {
	f := &fakeKeystone{tokens: map[string]tokenInfo{}}
	v, c := newTestValidator(f, KeystoneOptions{})
	for i := 0; i < 2; i++ {
		_, err := v.ValidateToken(context.Background(), "garbage")
		wantAPIError(t, err, http.StatusUnauthorized, CodeInvalidToken)
	}
	if n := f.count(); n != 2 {
		t.Fatalf("%d lookups for 2 refused validations, want 2", n)
	}
	// Keystone down: 503 every time, and nothing is remembered as success.
	f.err = apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "down")
	f.tokens["good"] = tokenInfo{ProjectID: "p", ExpiresAt: c.t.Add(time.Hour)}
	_, err := v.ValidateToken(context.Background(), "good")
	wantAPIError(t, err, http.StatusServiceUnavailable, CodeAuthUnavailable)
	f.err = nil
	if p, err := v.ValidateToken(context.Background(), "good"); err != nil || p.Project != "p" {
		t.Fatalf("after Keystone is back: %q, %v", p, err)
	}
	// Not even sent to Keystone: nothing a header could carry as a token.
	for _, bad := range []string{"", "two words", strings.Repeat("x", maxTokenLen+1), "caf\u00e9"} {
		_, err := v.ValidateToken(context.Background(), bad)
		wantAPIError(t, err, http.StatusUnauthorized, CodeInvalidToken)
	}
	if n := f.count(); n != 4 {
		t.Fatalf("%d lookups, want 4", n)
	}
}

func TestKeystoneCacheBounded(t *testing.T) {
	f := &fakeKeystone{tokens: map[string]tokenInfo{}}
	v, c := newTestValidator(f, KeystoneOptions{CacheSize: 3})
	for i := 0; i < 5; i++ {
		f.tokens[fmt.Sprint("t", i)] = tokenInfo{ProjectID: fmt.Sprint("p", i), ExpiresAt: c.t.Add(time.Hour)}
	}
	for _, tok := range []string{"t0", "t1", "t2", "t0", "t3", "t4"} {
		if _, err := v.ValidateToken(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}
	if n := v.cache.len(); n != 3 {
		t.Fatalf("cache holds %d, want its bound 3", n)
	}
	// Least recently used went first: t1 and t2; t0 was used again before t3 came.
	for tok, want := range map[string]bool{"t0": true, "t1": false, "t2": false, "t3": true, "t4": true} {
		if _, ok := v.cache.get(sha256.Sum256([]byte(tok)), c.t); ok != want {
			t.Errorf("%s cached %v, want %v", tok, ok, want)
		}
	}
	// The tokens themselves are not kept, only their hashes.
	for e := v.cache.ll.Front(); e != nil; e = e.Next() {
		if it := e.Value.(*cacheItem); strings.HasPrefix(it.id.Project, "t") {
			t.Fatalf("cache item %+v", it)
		}
	}
}

func TestKeystoneCacheOff(t *testing.T) {
	f := &fakeKeystone{tokens: map[string]tokenInfo{"t": {ProjectID: "p", ExpiresAt: time.Now().Add(time.Hour)}}}
	v, _ := newTestValidator(f, KeystoneOptions{CacheTTL: -1})
	for i := 0; i < 3; i++ {
		if _, err := v.ValidateToken(context.Background(), "t"); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count(); n != 3 {
		t.Fatalf("%d lookups with the cache off, want 3", n)
	}
}

func TestClassifyKeystone(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		ctx    context.Context
		err    error
		status int
		code   string
	}{
		{context.Background(), gophercloud.ErrUnexpectedResponseCode{Actual: 404}, 401, CodeInvalidToken},
		{context.Background(), gophercloud.ErrUnexpectedResponseCode{Actual: 403}, 503, CodeAuthUnavailable},
		{context.Background(), gophercloud.ErrUnexpectedResponseCode{Actual: 500}, 503, CodeAuthUnavailable},
		{context.Background(), errors.New("dial tcp 127.0.0.1:5000: connection refused"), 503, CodeAuthUnavailable},
		{canceled, context.Canceled, 503, CodeAuthUnavailable},
	}
	for _, c := range cases {
		wantAPIError(t, classifyKeystone(c.ctx, c.err), c.status, c.code)
	}
}

// validatorFunc adapts a function to TokenValidator.
type validatorFunc func(ctx context.Context, token string) (Identity, error)

func (f validatorFunc) ValidateToken(ctx context.Context, token string) (Identity, error) {
	return f(ctx, token)
}

// The gateway asks the validator about tokens that are not static ones, answers its refusals
// in the API's shape (Cinder's under /v3/), and leaves the unauthenticated paths alone.
func TestGatewayTokenValidator(t *testing.T) {
	asked := 0
	g := &Gateway{Tokens: map[string]string{"static": "p-static"}, TokenValidator: validatorFunc(func(_ context.Context, tok string) (Identity, error) {
		asked++
		switch tok {
		case "ks-demo":
			return Identity{Project: "p-demo", Role: RoleReader}, nil
		case "ks-unscoped":
			return Identity{}, apiErr(http.StatusUnauthorized, CodeUnscopedToken, "the token is unscoped")
		case "ks-down":
			return Identity{}, apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "keystone unreachable")
		case "ks-odd":
			return Identity{}, errors.New("something else")
		}
		return Identity{}, apiErr(http.StatusUnauthorized, CodeInvalidToken, "the token is invalid, expired or revoked")
	})}
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	do := func(path, header, tok string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if header != "" {
			req.Header.Set(header, tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body strings.Builder
		_, _ = fmt.Fprint(&body, resp.Header.Get("WWW-Authenticate"), " ")
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		body.Write(buf[:n])
		return resp.StatusCode, body.String()
	}
	cases := []struct {
		path, header, tok string
		status            int
		want              string // in the body
	}{
		// accepted: the unrouted path answers 404 in the API's shape, past auth
		{"/v1/nothing", "X-Auth-Token", "ks-demo", 404, `"not_found"`},
		{"/v1/nothing", "Authorization", "Bearer static", 404, `"not_found"`},
		{"/v3/p-demo/nothing", "X-Auth-Token", "ks-demo", 404, `"itemNotFound"`},
		// the token's project, not the path's
		{"/v3/p-static/volumes/detail", "X-Auth-Token", "ks-demo", 404, "project p-static not found"},
		{"/v1/nothing", "X-Auth-Token", "ks-garbage", 401, CodeInvalidToken},
		{"/v1/nothing", "X-Auth-Token", "ks-unscoped", 401, "the token is unscoped"},
		{"/v3/p/volumes", "X-Auth-Token", "ks-unscoped", 401, `"unauthorized"`},
		{"/v1/nothing", "X-Auth-Token", "ks-down", 503, CodeAuthUnavailable},
		{"/v1/nothing", "X-Auth-Token", "ks-odd", 503, CodeAuthUnavailable},
		{"/v3/p/volumes", "X-Auth-Token", "ks-down", 503, `"serviceUnavailable"`},
		{"/v1/nothing", "", "", 401, "missing or invalid bearer token"},
		{"/openapi.json", "X-Auth-Token", "ks-down", 200, ""},
	}
	for _, c := range cases {
		status, body := do(c.path, c.header, c.tok)
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s with %s %q: HTTP %d %s; want %d with %q", c.path, c.header, c.tok, status, body, c.status, c.want)
		}
		if status == 401 && !strings.HasPrefix(body, "Bearer") {
			t.Errorf("%s with %q: 401 without WWW-Authenticate", c.path, c.tok)
		}
	}
	if asked != 9 {
		t.Errorf("validator asked %d times, want 9 (never for a static token or an open path)", asked)
	}
}
