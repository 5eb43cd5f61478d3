package keys

import (
	"testing"
	"time"
)

func TestRings(t *testing.T) {
	var s Rings
	if l := s.Life(); l != 0 {
		t.Fatalf("empty: life %s, want 0", l)
	}
	day, hour := NewRing(nil, nil, 24*time.Hour, nil), NewRing(nil, nil, time.Hour, nil)
	s.Add(hour)
	s.Add(day)
	if l := s.Life(); l != 24*time.Hour {
		t.Errorf("with a 1h and a 24h ring: life %s, want the longest, 24h", l)
	}
	s.Remove(day)
	if l := s.Life(); l != time.Hour {
		t.Errorf("after the 24h ring left: life %s, want 1h", l)
	}
	s.Remove(day) // not there any more: nothing changes
	s.Remove(hour)
	if l := s.Life(); l != 0 {
		t.Errorf("after every ring left: life %s, want 0", l)
	}
}
