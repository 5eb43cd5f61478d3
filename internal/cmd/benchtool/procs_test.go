package main

import (
	"math"
	"testing"
)

func TestGCLineCPU(t *testing.T) {
	for _, tc := range []struct {
		line string
		want float64
	}{
		{"gc 533 @54.892s 2%: 0.13+5.9+0.081 ms clock, 0.26+0.72/3.0/0+0.16 ms cpu, 10->10->5 MB, 10 MB goal, 0 MB stacks, 0 MB globals, 2 P\n", 4.14},
		{"gc 1 @0.043s 5%: 4.3+4.8+0.004 ms clock, 8.6+0.65/0.97/0+0.009 ms cpu, 3->4->1 MB, 4 MB goal, 0 MB stacks, 0 MB globals, 2 P", 10.229},
		{"gc 7 @1.0s 1%: 0.1+1+0.1 ms clock, 0.2+0/1.5/0.5+0.2 ms cpu, 4->4->2 MB, 5 MB goal, 2 P (forced)", 2.4},
		{`{"level":"info","msg":"gc 3 of something else"}`, 0},
		{"gc 2 @0.1s 1%: no cpu figures", 0},
	} {
		if got := gcLineCPU(tc.line); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("gcLineCPU(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}
