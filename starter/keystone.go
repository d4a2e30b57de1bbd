package starter

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// Error codes of a refused or unverifiable Keystone token.
const (
	CodeInvalidToken    = "invalid_token"    // 401: Keystone does not know the token (invalid, expired or revoked)
	CodeUnscopedToken   = "unscoped_token"   // 401: a valid token, but not scoped to a project
	CodeAuthUnavailable = "auth_unavailable" // 503: Keystone could not be asked, or refused to answer
)

// Defaults of KeystoneOptions.
const (
	DefaultKeystoneCacheTTL  = 60 * time.Second
	DefaultKeystoneCacheSize = 10000
	DefaultKeystoneTimeout   = 10 * time.Second
)

// maxTokenLen bounds what is sent to Keystone: Fernet tokens are about 200 characters, PKI
// tokens of old clouds a few KiB.
const maxTokenLen = 8192

// KeystoneOptions configure a KeystoneValidator.
type KeystoneOptions struct {
	// Auth are imagevol's own (service) credentials. Keystone lets a user validate other
	// users' tokens (GET /v3/auth/tokens) when its policy allows it: by default a user with
	// the service or admin role.
	Auth gophercloud.AuthOptions
	// CacheTTL is how long a successful validation is reused, never past the token's expiry.
	// 0 means DefaultKeystoneCacheTTL; negative turns the cache off.
	CacheTTL time.Duration
	// CacheSize is the most validations kept (least recently used go first); 0 means
	// DefaultKeystoneCacheSize.
	CacheSize int
	// Timeout bounds one call to Keystone (authentication included); 0 means
	// DefaultKeystoneTimeout.
	Timeout time.Duration
}

// tokenInfo is what a validation yields.
type tokenInfo struct {
	ProjectID string
	Role      Role // the strongest of the token's roles in ProjectID that imagevol knows
	ExpiresAt time.Time
}

// KeystoneValidator is a TokenValidator that asks Keystone (GET /v3/auth/tokens) for the
// project a token is scoped to and its roles there, and remembers successful answers for a
// short while.
//
// A cached token stays accepted until its entry expires, even if it is revoked in Keystone
// meanwhile: revocation takes effect after at most CacheTTL. Failures are never cached.
type KeystoneValidator struct {
	lookup  func(ctx context.Context, token string) (tokenInfo, error)
	cache   *tokenCache // nil: no cache
	timeout time.Duration
	now     func() time.Time

	hits, misses atomic.Int64
}

var _ TokenValidator = (*KeystoneValidator)(nil)

// NewKeystoneValidator authenticates imagevol's service user to Keystone (re-authenticating
// when its token expires if Auth.AllowReauth is set) and returns a validator of other tokens.
// Tokens are validated at Auth.IdentityEndpoint, the address imagevol is known to reach.
func NewKeystoneValidator(ctx context.Context, o KeystoneOptions) (*KeystoneValidator, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultKeystoneTimeout
	}
	pc, err := openstack.NewClient(o.Auth.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("keystone: %w", err)
	}
	pc.HTTPClient = http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: o.Timeout,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
		},
		Timeout: o.Timeout,
	}
	actx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	if err := openstack.Authenticate(actx, pc, o.Auth); err != nil {
		return nil, fmt.Errorf("keystone: authenticate imagevol's service user at %s: %w", o.Auth.IdentityEndpoint, err)
	}
	// Empty options: the identity endpoint is the auth URL itself, not the catalog's.
	identity, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		return nil, fmt.Errorf("keystone: %w", err)
	}
	v := newKeystoneValidator(func(ctx context.Context, token string) (tokenInfo, error) {
		return getToken(ctx, identity, token)
	}, o)
	return v, nil
}

// newKeystoneValidator builds a validator around lookup (tests pass their own).
func newKeystoneValidator(lookup func(context.Context, string) (tokenInfo, error), o KeystoneOptions) *KeystoneValidator {
	if o.Timeout <= 0 {
		o.Timeout = DefaultKeystoneTimeout
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultKeystoneCacheTTL
	}
	if o.CacheSize <= 0 {
		o.CacheSize = DefaultKeystoneCacheSize
	}
	v := &KeystoneValidator{lookup: lookup, timeout: o.Timeout, now: time.Now}
	if o.CacheTTL > 0 {
		v.cache = newTokenCache(o.CacheSize, o.CacheTTL)
	}
	return v
}

// ValidateToken returns the ID of the project token is scoped to and the token's role there
// (the strongest of admin, member and reader it has; none when it has none of them). Its
// errors are *APIError: 401 invalid_token or unscoped_token, 503 auth_unavailable.
func (v *KeystoneValidator) ValidateToken(ctx context.Context, token string) (Identity, error) {
	if token == "" || len(token) > maxTokenLen || !printableASCII(token) {
		return Identity{}, apiErr(http.StatusUnauthorized, CodeInvalidToken, "not a Keystone token")
	}
	key := sha256.Sum256([]byte(token))
	if v.cache != nil {
		if id, ok := v.cache.get(key, v.now()); ok {
			v.hits.Add(1)
			return id, nil
		}
	}
	v.misses.Add(1)
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	info, err := v.lookup(ctx, token)
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Project: info.ProjectID, Role: info.Role}
	if v.cache != nil {
		v.cache.put(key, id, info.ExpiresAt, v.now())
	}
	return id, nil
}

// CacheStats reports how many validations were answered from the cache and how many asked
// Keystone.
func (v *KeystoneValidator) CacheStats() (hits, misses int64) { return v.hits.Load(), v.misses.Load() }

// getToken validates token at Keystone and reads its project scope and expiry.
func getToken(ctx context.Context, identity *gophercloud.ServiceClient, token string) (tokenInfo, error) {
	res := tokens.Get(ctx, identity, token)
	if res.Err != nil {
		return tokenInfo{}, classifyKeystone(ctx, res.Err)
	}
	tok, err := res.ExtractToken()
	if err != nil {
		return tokenInfo{}, apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "keystone: unreadable token validation: %v", err)
	}
	project, err := res.ExtractProject()
	if err != nil {
		return tokenInfo{}, apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "keystone: unreadable token validation: %v", err)
	}
	if project == nil || project.ID == "" {
		why := "the token is unscoped"
		if d, _ := res.ExtractDomain(); d != nil && d.ID != "" {
			why = fmt.Sprintf("the token is scoped to domain %s", d.Name)
		} else {
			var sys struct {
				System map[string]any `json:"system"`
			}
			if res.ExtractInto(&sys) == nil && sys.System != nil {
				why = "the token is system-scoped"
			}
		}
		return tokenInfo{}, apiErr(http.StatusUnauthorized, CodeUnscopedToken, "%s; volumes belong to projects: use a project-scoped token", why)
	}
	roles, err := res.ExtractRoles()
	if err != nil {
		return tokenInfo{}, apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "keystone: unreadable token validation: %v", err)
	}
	names := make([]string, 0, len(roles))
	for _, r := range roles {
		names = append(names, r.Name)
	}
	return tokenInfo{ProjectID: project.ID, Role: roleOfNames(names), ExpiresAt: tok.ExpiresAt}, nil
}

// classifyKeystone maps a failed GET /v3/auth/tokens: 404 is Keystone's answer for a token it
// does not accept; anything else means imagevol could not get an answer.
func classifyKeystone(ctx context.Context, err error) error {
	var ue gophercloud.ErrUnexpectedResponseCode
	switch {
	case gophercloud.ResponseCodeIs(err, http.StatusNotFound):
		return apiErr(http.StatusUnauthorized, CodeInvalidToken, "the token is invalid, expired or revoked")
	case gophercloud.ResponseCodeIs(err, http.StatusForbidden):
		return apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable,
			"keystone refused to let imagevol's service user validate tokens (it needs the service or admin role)")
	case ctx.Err() != nil:
		return apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "keystone did not answer in time: %v", err)
	case errors.As(err, &ue):
		return apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "keystone answered HTTP %d to a token validation", ue.Actual)
	}
	return apiErr(http.StatusServiceUnavailable, CodeAuthUnavailable, "keystone unreachable: %v", err)
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// tokenCache is a bounded LRU of successful validations, keyed by the token's SHA-256 (the
// tokens themselves are not kept).
type tokenCache struct {
	mu    sync.Mutex
	max   int
	ttl   time.Duration
	ll    *list.List // front: most recently used
	items map[[32]byte]*list.Element
}

type cacheItem struct {
	key   [32]byte
	id    Identity
	until time.Time
}

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	return &tokenCache{max: max, ttl: ttl, ll: list.New(), items: map[[32]byte]*list.Element{}}
}

func (c *tokenCache) get(key [32]byte, now time.Time) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[key]
	if !ok {
		return Identity{}, false
	}
	it := e.Value.(*cacheItem)
	if !now.Before(it.until) {
		c.ll.Remove(e)
		delete(c.items, key)
		return Identity{}, false
	}
	c.ll.MoveToFront(e)
	return it.id, true
}

// put remembers a validation until min(now+ttl, expires); one that would already be over is
// not kept.
func (c *tokenCache) put(key [32]byte, id Identity, expires, now time.Time) {
	until := now.Add(c.ttl)
	if !expires.IsZero() && expires.Before(until) {
		until = expires
	}
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.items[key]; ok {
		it := e.Value.(*cacheItem)
		it.id, it.until = id, until
		c.ll.MoveToFront(e)
		return
	}
	for c.ll.Len() >= c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*cacheItem).key)
	}
	c.items[key] = c.ll.PushFront(&cacheItem{key: key, id: id, until: until})
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
