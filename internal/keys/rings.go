package keys

import (
	"slices"
	"sync"
	"time"
)

// Rings are the rings of the handlers that sign with one key set now,
// added as each starts and removed as it stops. The key commands judge
// keys by the longest token lifetime among them (Life). The zero value is
// empty and ready; it must not be copied after first use.
type Rings struct {
	mu    sync.Mutex
	rings []*Ring
}

// Add adds r.
func (s *Rings) Add(r *Ring) {
	s.mu.Lock()
	s.rings = append(s.rings, r)
	s.mu.Unlock()
}

// Remove removes r.
func (s *Rings) Remove(r *Ring) {
	s.mu.Lock()
	s.rings = slices.DeleteFunc(s.rings, func(o *Ring) bool { return o == r })
	s.mu.Unlock()
}

// Life is the longest a token of the rings lives (the lifetime they judge
// keys by); zero while there is none.
func (s *Rings) Life() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var life time.Duration
	for _, r := range s.rings {
		life = max(life, r.Life())
	}
	return life
}
