package password

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// A hash class names what verifying a hash costs: the algorithm and its
// cost parameters, not the salt or key. Two hashes of one class take the
// same work to verify, so a dummy hash of a class (a random salt and key
// with those parameters) stands in for any real hash of it.
//
//	argon2id:m=19456,t=2,p=1
//	bcrypt:12
//
// The user store keeps the set of classes of the hashes it holds (see
// store.Store.HashClasses), and a failed login spends the work of every
// class in it (see Pad): otherwise an imported bcrypt hash of cost 12,
// against an unknown user's argon2id dummy, tells by timing that the name
// exists.

// maxPadClasses bounds how many classes Pad verifies, so that a store
// holding many classes (a careless import, a planted record) cannot make
// every failed login cost more than this many hashes. Past it, the most
// expensive classes are kept: a dropped class costs less than each kept
// one, and its users are told apart by at most its own cost.
const maxPadClasses = 8

// bcryptRoundWork is the work of one bcrypt round (a cost of c runs 2^c of
// them) in argon2id's units of KiB*passes, for ordering classes across
// algorithms: bcrypt cost 10 takes about as long as argon2id at the OWASP
// parameters (19456 KiB, 2 passes), see bcryptPadBelowCost.
const bcryptRoundWork = 38

// classLimits are what Class accepts: any hash that parses within the
// configuration ceilings. Whether a Hasher verifies (or pads with) a class
// is decided by its own, lower, ceilings.
var classLimits = limits{
	maxMemory:     MaxMemory,
	maxTime:       MaxTime,
	maxWork:       uint64(MaxMemory) * MaxTime,
	maxBcryptCost: 31,
}

// Class returns the class of the argon2id or bcrypt hash encoded, or "" when
// it is not one (see the package's hash classes).
func Class(encoded string) string {
	switch algorithmPrefix(encoded) {
	case AlgArgon2id:
		if a, err := parseArgon2id(encoded, classLimits); err == nil {
			return argon2idClass(a.params)
		}
	case AlgBcrypt:
		if cost, err := parseBcrypt(encoded, classLimits); err == nil {
			return bcryptClass(cost)
		}
	}
	return ""
}

func argon2idClass(p Params) string {
	return fmt.Sprintf("%s:m=%d,t=%d,p=%d", AlgArgon2id, p.Memory, p.Time, p.Threads)
}

func bcryptClass(cost int) string { return AlgBcrypt + ":" + strconv.Itoa(cost) }

// hashClass is a parsed class.
type hashClass struct {
	name   string
	alg    string
	params Params // argon2id: Memory, Time, Threads
	cost   int    // bcrypt
}

// work estimates the class's verification cost in KiB*passes, for ordering.
func (c hashClass) work() uint64 {
	if c.alg == AlgBcrypt {
		return bcryptRoundWork << c.cost
	}
	return uint64(c.params.Memory) * uint64(c.params.Time)
}

// parseClass parses what Class returns, strictly (the canonical form only),
// and checks it against classLimits.
func parseClass(s string) (hashClass, bool) {
	alg, rest, _ := strings.Cut(s, ":")
	switch alg {
	case AlgArgon2id:
		var m, t, p uint32
		if _, err := fmt.Sscanf(rest, "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || p > MaxThreads {
			return hashClass{}, false
		}
		c := hashClass{name: s, alg: alg, params: Params{Memory: m, Time: t, Threads: uint8(p)}}
		if argon2idClass(c.params) != s || checkArgon2idCost(c.params, classLimits) != nil {
			return hashClass{}, false
		}
		return c, true
	case AlgBcrypt:
		cost, err := strconv.Atoi(rest)
		if err != nil || bcryptClass(cost) != s || cost < bcrypt.MinCost || cost > classLimits.maxBcryptCost {
			return hashClass{}, false
		}
		return hashClass{name: s, alg: alg, cost: cost}, true
	}
	return hashClass{}, false
}

// within reports whether h verifies hashes of class c: the ceilings on
// what a stored hash may ask for apply to the dummies Pad builds too.
func (h *Hasher) within(c hashClass) bool {
	if c.alg == AlgBcrypt {
		return c.cost <= h.limits.maxBcryptCost
	}
	return checkArgon2idCost(c.params, h.limits) == nil
}

// padPlan returns the classes Pad verifies dummies of: those of classes
// within h's ceilings and h's own (new hashes are of it, and so is the
// dummy an unknown user has always cost), most expensive first, at most
// maxPadClasses, less spent.
func (h *Hasher) padPlan(classes []string, spent string) []hashClass {
	own, _ := parseClass(argon2idClass(h.params))
	plan := []hashClass{own}
	for _, s := range classes {
		c, ok := parseClass(s)
		if !ok || !h.within(c) || slices.ContainsFunc(plan, func(p hashClass) bool { return p.name == c.name }) {
			continue
		}
		plan = append(plan, c)
	}
	slices.SortStableFunc(plan[1:], func(a, b hashClass) int {
		return cmp.Or(cmp.Compare(b.work(), a.work()), strings.Compare(a.name, b.name))
	})
	if len(plan) > maxPadClasses {
		plan = plan[:maxPadClasses]
	}
	return slices.DeleteFunc(plan, func(c hashClass) bool { return c.name == spent })
}

// Pad spends, for a login that failed, a verification of pw against a
// dummy hash of every class in classes (the classes the user store holds)
// and of h's own, except spent: the class VerifyUnpadded returned, whose
// real verification already ran ("" for none, as for an unknown user).
// Every failed login then costs the same work, one verification of each
// class, whoever the user is and whatever kind of hash is stored for him;
// padding only up to the slowest class would leave the users of every
// other class a full hash of their own slower than an unknown name.
//
// Classes above h's ceilings on stored hashes are skipped (no dummy is
// built for them: a hash of such a class is refused unverified anyway),
// and at most maxPadClasses are verified. Call Pad where the real hash
// runs, inside the hashing slot.
func (h *Hasher) Pad(pw string, classes []string, spent string) {
	if h == nil || h.dummy == "" {
		return
	}
	for _, c := range h.padPlan(classes, spent) {
		h.verifyDummyOf(c, pw)
	}
}

// verifyDummyOf spends the work of verifying pw against a hash of class c,
// and discards the result. A dummy needs no real password behind it:
// verification costs the same for any salt and key, and a key of zeros
// (argon2id) or a hash of dots (bcrypt's zero) matches no password but
// with negligible odds, which the result being discarded makes moot.
func (h *Hasher) verifyDummyOf(c hashClass, pw string) {
	switch c.alg {
	case AlgArgon2id:
		if c.params == argon2idParamsOnly(h.params) {
			_, _, _, _ = h.VerifyUnpadded(h.dummy, pw)
			return
		}
		if len(pw) > MaxBytes {
			return // VerifyUnpadded refuses such a password without hashing
		}
		p := c.params
		p.KeyLen, p.SaltLen = h.params.KeyLen, h.params.SaltLen
		salt := make([]byte, p.SaltLen)
		h.timed(func() { _ = argon2idKey([]byte(pw), salt, p) })
	case AlgBcrypt:
		// A password past 72 bytes is refused without hashing against a
		// real bcrypt hash; that refusal, too, must cost what a verification
		// of the class does, so the dummy hashes its first 72 bytes.
		b := []byte(pw)
		if len(b) > bcryptMaxPassword {
			b = b[:bcryptMaxPassword]
		}
		dummy := fmt.Sprintf("$2b$%02d$%s", c.cost, strings.Repeat(".", 53))
		h.timed(func() { _ = bcrypt.CompareHashAndPassword([]byte(dummy), b) })
	}
}

// argon2idParamsOnly keeps the parameters a class names.
func argon2idParamsOnly(p Params) Params {
	return Params{Memory: p.Memory, Time: p.Time, Threads: p.Threads}
}

// checkArgon2idCost applies the ceilings on m, t, p and m*t of a stored
// argon2id hash.
func checkArgon2idCost(p Params, l limits) error {
	m, t, threads := p.Memory, p.Time, uint32(p.Threads)
	switch {
	case threads < 1 || threads > MaxThreads:
		return malformed("argon2id: parallelism %d outside 1..%d", threads, MaxThreads)
	case t < 1 || t > l.maxTime:
		return malformed("argon2id: time %d outside 1..%d", t, l.maxTime)
	case m < 8*threads || m > l.maxMemory:
		return malformed("argon2id: memory %d KiB outside %d..%d", m, 8*threads, l.maxMemory)
	case uint64(m)*uint64(t) > l.maxWork:
		return malformed("argon2id: memory*time %d exceeds %d", uint64(m)*uint64(t), l.maxWork)
	}
	return nil
}
