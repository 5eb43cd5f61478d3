// Package throttle counts failed logins and decides when a login must wait.
//
// Failures are counted under three keys (issue 4, "Login throttling"):
//
//   - the pair (client IP, username): one client guessing one account;
//   - the username alone: many clients guessing one account;
//   - the client IP alone: one client trying one password against many
//     usernames (password spraying).
//
// Each key locks on its own once it collects its limit of failures within
// the window. The first lockout lasts BaseLockout; each further round (the
// limit reached again after a lockout ended, before the key was forgotten)
// doubles it, up to MaxLockout. A successful login clears the pair's
// counters; the username and IP counters run on, so an attacker who also
// knows one valid account cannot use it to reset a spraying or guessing
// budget.
//
// The Limiter interface is small on purpose: a store shared by several
// gateways (etcd, a database) can implement it later. Memory is the
// in-process implementation, bounded in size.
package throttle

import (
	"container/list"
	"context"
	"strings"
	"sync"
	"time"
)

// Limiter decides whether a login may proceed and records its outcome.
// Implementations must be safe for concurrent use. Usernames are expected
// in their normalized form (the caller lowers case, as the store does).
type Limiter interface {
	// Check returns how long a login for (ip, username) must still wait,
	// 0 when it may proceed. It records nothing.
	Check(ctx context.Context, ip, username string) (time.Duration, error)
	// Fail records a failed login and returns the wait it triggers for the
	// next attempt (0 when no key locked).
	Fail(ctx context.Context, ip, username string) (time.Duration, error)
	// Succeed records a successful login: the pair's counters are cleared.
	Succeed(ctx context.Context, ip, username string) error
}

// Defaults of Config.
const (
	DefaultMaxFailures     = 5
	DefaultUserMaxFailures = 10
	DefaultIPMaxFailures   = 20
	DefaultWindow          = time.Minute
	DefaultBaseLockout     = time.Minute
	DefaultMaxLockout      = time.Hour
	DefaultMaxEntries      = 100_000
)

// Config tunes Memory. Zero fields take the defaults above; a negative
// limit disables that key.
type Config struct {
	// Failures of one (IP, username) pair within Window that lock the
	// pair. Default 5.
	MaxFailures int
	// Failures for one username, from any IP, within Window that lock the
	// username for every client. Default 10, above MaxFailures so that a
	// single client trips its pair first.
	UserMaxFailures int
	// Failures from one IP, for any usernames, within Window that lock the
	// IP (password spraying). Default 20: a person mistyping a few
	// accounts behind one NAT stays well below it, a sprayer does not.
	IPMaxFailures int
	// The counting window, started by the first failure of a round.
	// Default 1m.
	Window time.Duration
	// The first lockout. Default 1m.
	BaseLockout time.Duration
	// The longest lockout; each further round doubles up to it. Default 1h.
	MaxLockout time.Duration
	// Most keys held; the least recently used are evicted past it, so
	// memory stays bounded however many IPs and usernames an attacker
	// uses. Each pair of (IP, username) takes up to three keys.
	// Default 100000 (some tens of MB at most).
	MaxEntries int
	// Clock; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxFailures, DefaultMaxFailures)
	def(&c.UserMaxFailures, DefaultUserMaxFailures)
	def(&c.IPMaxFailures, DefaultIPMaxFailures)
	def(&c.MaxEntries, DefaultMaxEntries)
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.BaseLockout <= 0 {
		c.BaseLockout = DefaultBaseLockout
	}
	if c.MaxLockout <= 0 {
		c.MaxLockout = DefaultMaxLockout
	}
	if c.MaxLockout < c.BaseLockout {
		c.MaxLockout = c.BaseLockout
	}
	if c.MaxEntries < 1 {
		c.MaxEntries = 1
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Memory is the in-process Limiter: an LRU-bounded map of counters under
// one mutex. Every operation is O(1).
type Memory struct {
	cfg Config

	mu      sync.Mutex
	entries map[string]*list.Element
	lru     *list.List // front: most recently used; values are *entry
	evicted uint64
}

type entry struct {
	key         string
	count       int       // failures in the current round
	windowStart time.Time // first failure of the round
	lockedUntil time.Time
	strikes     int       // lockouts so far; the next lasts BaseLockout << strikes
	last        time.Time // last failure or lockout end, for forgetting
}

// NewMemory returns an in-memory Limiter.
func NewMemory(cfg Config) *Memory {
	cfg.setDefaults()
	return &Memory{cfg: cfg, entries: make(map[string]*list.Element), lru: list.New()}
}

// Config returns the configuration in force, defaults filled in.
func (m *Memory) Config() Config { return m.cfg }

type kind byte

const (
	kindPair kind = 'p'
	kindUser kind = 'u'
	kindIP   kind = 'i'
)

func (m *Memory) limit(k kind) int {
	switch k {
	case kindPair:
		return m.cfg.MaxFailures
	case kindUser:
		return m.cfg.UserMaxFailures
	default:
		return m.cfg.IPMaxFailures
	}
}

// keyOf builds a map key. NUL cannot occur in a client IP, and the caller
// refuses usernames with control characters; were one to get through, the
// kind prefix and the length of ip still keep keys apart.
func keyOf(k kind, ip, username string) string {
	var b strings.Builder
	b.Grow(len(ip) + len(username) + 2)
	b.WriteByte(byte(k))
	switch k {
	case kindPair:
		b.WriteString(ip)
		b.WriteByte(0)
		b.WriteString(username)
	case kindUser:
		b.WriteString(username)
	default:
		b.WriteString(ip)
	}
	return b.String()
}

func (m *Memory) keys(ip, username string) [3]struct {
	k   kind
	key string
} {
	return [3]struct {
		k   kind
		key string
	}{
		{kindPair, keyOf(kindPair, ip, username)},
		{kindUser, keyOf(kindUser, "", username)},
		{kindIP, keyOf(kindIP, ip, "")},
	}
}

// Check implements Limiter.
func (m *Memory) Check(_ context.Context, ip, username string) (time.Duration, error) {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var wait time.Duration
	for _, k := range m.keys(ip, username) {
		if m.limit(k.k) < 0 {
			continue
		}
		el, ok := m.entries[k.key]
		if !ok {
			continue
		}
		e := el.Value.(*entry)
		if d := e.lockedUntil.Sub(now); d > wait {
			wait = d
		}
	}
	return wait, nil
}

// Fail implements Limiter.
func (m *Memory) Fail(_ context.Context, ip, username string) (time.Duration, error) {
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	var wait time.Duration
	for _, k := range m.keys(ip, username) {
		limit := m.limit(k.k)
		if limit < 0 {
			continue
		}
		e := m.touch(k.key, now)
		if now.Before(e.lockedUntil) {
			// Only reached when a failure raced a lockout: do not extend it.
			wait = max(wait, e.lockedUntil.Sub(now))
			continue
		}
		if e.count == 0 || now.Sub(e.windowStart) >= m.cfg.Window {
			e.count, e.windowStart = 0, now
		}
		e.count++
		e.last = now
		if e.count >= limit {
			d := m.lockout(e.strikes)
			e.strikes++
			e.count = 0
			e.lockedUntil = now.Add(d)
			e.last = e.lockedUntil
			wait = max(wait, d)
		}
	}
	return wait, nil
}

// lockout is BaseLockout doubled once per earlier strike, capped.
func (m *Memory) lockout(strikes int) time.Duration {
	d := m.cfg.BaseLockout
	for i := 0; i < strikes && d < m.cfg.MaxLockout; i++ {
		d *= 2
	}
	return min(d, m.cfg.MaxLockout)
}

// Succeed implements Limiter.
func (m *Memory) Succeed(_ context.Context, ip, username string) error {
	key := keyOf(kindPair, ip, username)
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[key]; ok {
		m.lru.Remove(el)
		delete(m.entries, key)
	}
	return nil
}

// touch returns the entry for key, created or reset if it was forgotten,
// and marks it most recently used. An entry is forgotten (escalation
// included) once MaxLockout has passed since its last failure or the end of
// its last lockout.
func (m *Memory) touch(key string, now time.Time) *entry {
	if el, ok := m.entries[key]; ok {
		e := el.Value.(*entry)
		m.lru.MoveToFront(el)
		if now.Sub(e.last) >= m.cfg.MaxLockout && !now.Before(e.lockedUntil) {
			*e = entry{key: key}
		}
		return e
	}
	for len(m.entries) >= m.cfg.MaxEntries {
		oldest := m.lru.Back()
		m.lru.Remove(oldest)
		delete(m.entries, oldest.Value.(*entry).key)
		m.evicted++
	}
	e := &entry{key: key}
	m.entries[key] = m.lru.PushFront(e)
	return e
}

// Len returns the number of keys held.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// Evicted returns how many keys were evicted to stay within MaxEntries.
func (m *Memory) Evicted() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.evicted
}

// RetryAfterSeconds rounds a wait up to whole seconds, at least 1, for a
// Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

var _ Limiter = (*Memory)(nil)
