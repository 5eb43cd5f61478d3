// Package throttle counts failed logins and decides when a login must wait.
//
// Failures are counted under three keys:
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
// The Limiter interface is small on purpose, so that a store shared by
// several gateways can implement it. The policy itself (what one failure
// does to a key's state) is the pure function Config.FailKey over a
// KeyState, which every implementation calls, so that what a user sees does
// not depend on the backend. Memory is the in-process implementation,
// bounded in size; see Memory for why an attacker who makes up keys cannot
// evict a lockout from it.
package throttle

import (
	"context"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"
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
	// DefaultMaxLocks is MaxEntries/4 at the default MaxEntries.
	DefaultMaxLocks = DefaultMaxEntries / 4
)

// Config tunes a Limiter. Zero fields take the defaults above; a negative
// limit disables that key. MaxEntries and MaxLocks bound Memory only.
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
	// Most keys held, so memory stays bounded however many IPs and
	// usernames an attacker uses. Each pair of (IP, username) takes up to
	// three. MaxLocks of them are kept for keys that are locked or remember
	// their escalation; the rest hold failure counters of the other keys,
	// in a bounded cache that evicts the counters least likely to be used
	// again. Losing a counter loses at most a round's count, never a
	// lockout. Default 100000.
	MaxEntries int
	// Of MaxEntries, how many are kept for locked keys. Past it a lockout
	// is folded into a fixed overflow array that can only lock more, never
	// less (see Memory). Default MaxEntries/4, at least 1.
	MaxLocks int
	// Clock; default time.Now.
	Now func() time.Time

	maxCounters int // MaxEntries less MaxLocks, at least 1
}

// WithDefaults returns c with the defaults filled in. The policy methods
// below expect a Config filled in this way.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
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
	if c.MaxLocks <= 0 {
		c.MaxLocks = max(c.MaxEntries/4, 1)
	}
	c.maxCounters = max(c.MaxEntries-c.MaxLocks, 1)
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Kind is one of the three keys a login counts under.
type Kind byte

// The three kinds of key, in the order a Limiter looks at them.
const (
	KindPair Kind = 'p' // (client IP, username)
	KindUser Kind = 'u' // username, from any client
	KindIP   Kind = 'i' // client IP, for any username
)

var kinds = [3]Kind{KindPair, KindUser, KindIP}

// Limit is the number of failures within Window that locks a key of kind
// k; negative when that kind is disabled.
func (c *Config) Limit(k Kind) int {
	switch k {
	case KindPair:
		return c.MaxFailures
	case KindUser:
		return c.UserMaxFailures
	default:
		return c.IPMaxFailures
	}
}

// KeyState is what the policy remembers of one key. The zero value is a
// key never seen, or forgotten. Memory keeps it in process; a shared
// Limiter stores it, and both change it only through FailKey, so that the
// arithmetic cannot drift between backends.
type KeyState struct {
	Count       int       // failures in the current round
	WindowStart time.Time // first failure of the round
	LockedUntil time.Time
	Strikes     int       // lockouts so far; the next lasts BaseLockout << Strikes
	Last        time.Time // last failure or lockout end, for forgetting
}

// Wait is how long s still refuses logins at now, 0 when it does not.
func (s KeyState) Wait(now time.Time) time.Duration {
	return max(s.LockedUntil.Sub(now), 0)
}

// Forgotten reports whether s has been quiet long enough (MaxLockout since
// its last failure or the end of its last lockout) to start afresh,
// escalation included.
func (c *Config) Forgotten(s KeyState, now time.Time) bool {
	return now.Sub(s.Last) >= c.MaxLockout && !now.Before(s.LockedUntil)
}

// Expiry is when s stops mattering: from then on FailKey and Wait treat it
// exactly as the zero KeyState, so a store may drop it. A key that never
// locked (or was forgotten) matters until its window ends; one that
// locked, until it is forgotten.
func (c *Config) Expiry(s KeyState) time.Time {
	if s.Strikes == 0 && s.LockedUntil.IsZero() {
		if s.Count == 0 {
			return time.Time{}
		}
		return s.WindowStart.Add(c.Window)
	}
	return maxTime(s.Last.Add(c.MaxLockout), s.LockedUntil)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// FailKey is the policy: the state of a key of kind k after one failure at
// now, and the wait it triggers. A locked key is left as it is and answers
// the rest of its lockout (a failure that raced the lockout does not extend
// it). Otherwise the failure counts in the round's window (a new round
// starts when the window has passed); the limit-th locks the key for
// BaseLockout doubled once per earlier lockout, capped at MaxLockout. A
// disabled kind is left alone and never waits.
func (c *Config) FailKey(k Kind, s KeyState, now time.Time) (KeyState, time.Duration) {
	return c.failKey(k, s, now, 0)
}

// failKey is FailKey with a floor under the strikes a lockout escalates
// from: Memory's spill may remember more strikes than the entry.
func (c *Config) failKey(k Kind, s KeyState, now time.Time, minStrikes int) (KeyState, time.Duration) {
	limit := c.Limit(k)
	if limit < 0 {
		return s, 0
	}
	if now.Before(s.LockedUntil) {
		return s, s.LockedUntil.Sub(now)
	}
	if c.Forgotten(s, now) {
		s = KeyState{}
	}
	if s.Count == 0 || now.Sub(s.WindowStart) >= c.Window {
		s.Count, s.WindowStart = 0, now
	}
	s.Count++
	s.Last = now
	if s.Count < limit {
		return s, 0
	}
	strikes := max(s.Strikes, minStrikes)
	d := c.lockout(strikes)
	s.Strikes = strikes + 1
	s.Count = 0
	s.LockedUntil = now.Add(d)
	s.Last = s.LockedUntil
	return s, d
}

// lockout is BaseLockout doubled once per earlier strike, capped.
func (c *Config) lockout(strikes int) time.Duration {
	d := c.BaseLockout
	for i := 0; i < strikes && d < c.MaxLockout; i++ {
		d *= 2
	}
	return min(d, c.MaxLockout)
}

// Memory is the in-process Limiter, under one mutex; every operation is
// O(1).
//
// A lockout must not be evictable by keys an attacker makes up: with one
// LRU for everything, some tens of thousands of failures under fresh
// addresses and usernames would flush the lockout of the account being
// guessed, and its escalation with it. So keys live in three places:
//
//   - counters: keys that are not locked and remember no lockout, in an
//     otter cache (W-TinyLFU) of at most MaxEntries-MaxLocks. A flood of
//     made-up keys evicts these, and all it wins is a reset of a round's
//     count (fewer failures than the limit), never a lockout.
//   - locks: keys that are locked or still remember their escalation, in a
//     map of at most MaxLocks that counters never push on. Entries leave it
//     when forgotten (MaxLockout after the last failure or lockout end).
//   - spill: a fixed array of slots indexed by a keyed hash of the key,
//     allocated when locks first overflows. An entry pushed out of a full
//     locks table is folded into its slot by taking the later lockout end,
//     the later last failure and the higher strike count; a slot is never
//     cleared, only outlived. Nothing an attacker does can shorten a
//     lockout or lower an escalation held there.
//
// When locks is full, a new lockout still goes in, and one of a few
// sampled entries (the one forgotten or nearest to being forgotten) is
// folded into the spill. The alternative, refusing to remember the new
// lockout or evicting the old one outright, fails open: an attacker who can
// create MaxLocks lockouts (made-up usernames lock too, and must, lest the
// throttle tell known names from unknown ones) would then guess freely
// against every account. The spill fails closed instead: two keys that
// share a slot share its lockout, so under a flood of lockouts large
// enough to overflow locks, innocent logins may be refused (about the share
// of slots locked by the flood). Refresh tokens are not throttled, so
// sessions already open continue.
//
// Memory is bounded by MaxEntries entries of about 150 bytes plus their key
// (the IP and the username, at most some 300 bytes with a 256-byte
// username), and the spill's power of two >= 4*MaxLocks slots of 24 bytes:
// with the defaults at most about 50 MB, whatever the attack.
type Memory struct {
	cfg  Config
	seed maphash.Seed

	mu sync.Mutex
	// counters is used only under mu. Its maintenance (eviction) runs on
	// the calling goroutine, so it holds at most maxCounters entries
	// after every call.
	counters *otter.Cache[string, *entry]
	locks    map[string]*entry
	spill    []slot    // nil until locks first overflows
	spillEnd time.Time // every slot is forgotten from then on
	evicted  atomic.Uint64
	spilled  uint64
}

type entry struct {
	key string
	KeyState
	counter bool // held in counters, not in locks
}

// slot is a spilled lockout; times in Unix nanoseconds.
type slot struct {
	lockedUntil, last int64
	strikes           int64
}

// NewMemory returns an in-memory Limiter.
func NewMemory(cfg Config) *Memory {
	cfg.setDefaults()
	m := &Memory{cfg: cfg, seed: maphash.MakeSeed(), locks: make(map[string]*entry)}
	m.counters = otter.Must(&otter.Options[string, *entry]{
		MaximumSize: cfg.maxCounters,
		// Every call is made under mu: run maintenance (and so eviction)
		// in the call rather than on another goroutine, so that the bound
		// holds when the call returns.
		Executor: func(fn func()) { fn() },
		// Runs under otter's locks, possibly inside a call made under mu:
		// it must not take mu.
		OnDeletion: func(e otter.DeletionEvent[string, *entry]) {
			if e.Cause == otter.CauseOverflow {
				m.evicted.Add(1)
			}
		},
	})
	return m
}

// Config returns the configuration in force, defaults filled in.
func (m *Memory) Config() Config { return m.cfg }

func (m *Memory) limit(k Kind) int { return m.cfg.Limit(k) }

// appendKey appends a map key to b, so that lookups need not allocate. NUL
// cannot occur in a client IP, and the caller refuses usernames with
// control characters; were one to get through, the kind prefix and the
// length of ip still keep keys apart.
func appendKey(b []byte, k Kind, ip, username string) []byte {
	b = append(b, byte(k))
	switch k {
	case KindPair:
		b = append(b, ip...)
		b = append(b, 0)
		b = append(b, username...)
	case KindUser:
		b = append(b, username...)
	default:
		b = append(b, ip...)
	}
	return b
}

func keyOf(k Kind, ip, username string) string {
	return string(appendKey(nil, k, ip, username))
}

// Check implements Limiter.
func (m *Memory) Check(_ context.Context, ip, username string) (time.Duration, error) {
	now := m.cfg.Now()
	var buf [128]byte
	m.mu.Lock()
	defer m.mu.Unlock()
	spill := m.spill != nil && now.Before(m.spillEnd)
	var wait time.Duration
	for _, k := range kinds {
		if m.limit(k) < 0 {
			continue
		}
		key := appendKey(buf[:0], k, ip, username)
		if e, ok := m.locks[string(key)]; ok {
			wait = max(wait, e.Wait(now))
		}
		if spill {
			wait = max(wait, time.Duration(m.slotOf(key).lockedUntil-now.UnixNano()))
		}
	}
	return wait, nil
}

// Fail implements Limiter.
func (m *Memory) Fail(_ context.Context, ip, username string) (time.Duration, error) {
	now := m.cfg.Now()
	var buf [128]byte
	m.mu.Lock()
	defer m.mu.Unlock()
	var wait time.Duration
	for _, k := range kinds {
		if m.limit(k) < 0 {
			continue
		}
		key := appendKey(buf[:0], k, ip, username)
		minStrikes := 0
		if m.spill != nil && now.Before(m.spillEnd) {
			s := m.slotOf(key)
			if d := time.Duration(s.lockedUntil - now.UnixNano()); d > 0 {
				// Only reached when a failure raced a lockout: do not
				// extend it.
				wait = max(wait, d)
				continue
			}
			if now.Sub(time.Unix(0, s.last)) < m.cfg.MaxLockout {
				// The key's escalation may have been spilled.
				minStrikes = int(s.strikes)
			}
		}
		e := m.touch(key, now)
		var d time.Duration
		e.KeyState, d = m.cfg.failKey(k, e.KeyState, now, minStrikes)
		wait = max(wait, d)
		// A counter is never locked (it moves to locks when it locks), so
		// a wait here means this failure locked it.
		if d > 0 && e.counter {
			m.promote(e, now)
		}
	}
	return wait, nil
}

// Succeed implements Limiter. It forgets the pair's counters and
// escalation; a pair spilled into a shared slot keeps its slot's, which
// errs on the side of locking.
func (m *Memory) Succeed(_ context.Context, ip, username string) error {
	var buf [128]byte
	key := appendKey(buf[:0], KindPair, ip, username)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters.Invalidate(string(key))
	delete(m.locks, string(key))
	return nil
}

func (m *Memory) forgotten(e *entry, now time.Time) bool {
	return m.cfg.Forgotten(e.KeyState, now)
}

// touch returns the entry for key, created or reset if it was forgotten.
// Creating a counter may evict another counter, never a lock.
func (m *Memory) touch(key []byte, now time.Time) *entry {
	if e, ok := m.locks[string(key)]; ok {
		if !m.forgotten(e, now) {
			return e
		}
		delete(m.locks, e.key)
	} else if e, ok := m.counters.GetIfPresent(string(key)); ok {
		if m.forgotten(e, now) {
			*e = entry{key: e.key, counter: true}
		}
		return e
	}
	e := &entry{key: string(key), counter: true}
	m.counters.Set(e.key, e)
	return e
}

// lockSample is how many entries of a full locks table are looked at to
// choose the one that makes room. Any choice is safe (the spill keeps what
// leaves); a good one keeps the spill sparse.
const lockSample = 8

// promote moves a counter that just locked into the locks table. When the
// table is full, one of a few entries sampled at random (Go's map order) is
// dropped if forgotten, or else folded into the spill: the one whose
// lockout or escalation would be forgotten first.
func (m *Memory) promote(e *entry, now time.Time) {
	m.counters.Invalidate(e.key)
	e.counter = false
	if len(m.locks) >= m.cfg.MaxLocks {
		var out *entry
		n := 0
		for _, c := range m.locks {
			if out == nil || c.Last.Before(out.Last) {
				out = c
			}
			if n++; n == lockSample || m.forgotten(out, now) {
				break
			}
		}
		delete(m.locks, out.key)
		if !m.forgotten(out, now) {
			m.fold(out)
		}
	}
	m.locks[e.key] = e
}

// fold records e in its spill slot. Every field only grows, so what a slot
// holds can be outlived but never undone.
func (m *Memory) fold(e *entry) {
	if m.spill == nil {
		m.spill = make([]slot, m.spillSize())
	}
	s := m.slotOf([]byte(e.key))
	s.lockedUntil = max(s.lockedUntil, e.LockedUntil.UnixNano())
	s.last = max(s.last, e.Last.UnixNano())
	s.strikes = max(s.strikes, int64(e.Strikes))
	if end := e.Last.Add(m.cfg.MaxLockout); end.After(m.spillEnd) {
		m.spillEnd = end
	}
	m.spilled++
}

// spillSize is the number of slots: the power of two at or above
// 4*MaxLocks, so that a spill holding as many lockouts as the table shares
// few slots.
func (m *Memory) spillSize() int { return 1 << bits.Len(uint(4*m.cfg.MaxLocks-1)) }

// slotOf is key's slot. The hash is keyed per Memory, so an attacker
// cannot choose keys that land on a victim's slot.
func (m *Memory) slotOf(key []byte) *slot {
	return &m.spill[maphash.Bytes(m.seed, key)&uint64(len(m.spill)-1)]
}

// Len returns the number of keys held exactly (counters and locks).
func (m *Memory) Len() int {
	c, l := m.lens()
	return c + l
}

func (m *Memory) lens() (counters, locks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counters.EstimatedSize(), len(m.locks)
}

// Evicted returns how many counters were evicted to stay within
// MaxEntries.
func (m *Memory) Evicted() uint64 {
	return m.evicted.Load()
}

// Spilled returns how many lockouts were folded into the overflow array to
// stay within MaxLocks.
func (m *Memory) Spilled() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.spilled
}

// RetryAfterSeconds rounds a wait up to whole seconds, at least 1, for a
// Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

var _ Limiter = (*Memory)(nil)

// IPKey is the form under which a client address is counted. An IPv6
// client usually holds a whole /64, so one address per guess must not buy a
// fresh budget: IPv6 addresses count by their /64, IPv4-mapped ones as IPv4.
func IPKey(ip string) string {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	addr = addr.Unmap()
	if addr.Is4() {
		return addr.String()
	}
	p, err := addr.Prefix(64)
	if err != nil {
		return ip
	}
	return p.String()
}
