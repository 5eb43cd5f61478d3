package password

import (
	"runtime"
	"runtime/metrics"
	"strconv"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func BenchmarkHash(b *testing.B) {
	h := testHasher()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.Hash("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	h := testHasher()
	enc, err := h.Hash("correct horse battery staple")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, err := h.Verify(enc, "correct horse battery staple"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkVerifyDummy(b *testing.B) {
	h := testHasher()
	b.ReportAllocs()
	for b.Loop() {
		h.VerifyDummy("correct horse battery staple")
	}
}

// BenchmarkVerifyBcrypt uses bcrypt's default cost (10), typical of
// imported htpasswd files.
func BenchmarkVerifyBcrypt(b *testing.B) {
	h := testHasher()
	enc, err := bcrypt.GenerateFromPassword([]byte("correct horse battery staple"), bcrypt.DefaultCost)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _, err := h.Verify(string(enc), "correct horse battery staple"); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// bigHeap is live, pointer-rich heap for BenchmarkVerifyBigHeap, like a
// gateway's (Caddy, caches, stores: 40-60 MB).
var bigHeap map[string]*heapNode

type heapNode struct {
	name string
	tags []string
	vals []*int
	next *heapNode
}

func buildBigHeap(mb int) map[string]*heapNode {
	m := make(map[string]*heapNode)
	var prev *heapNode
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	target := ms.HeapAlloc + uint64(mb)<<20
	for i := 0; ; i++ {
		n := &heapNode{name: "user-" + strconv.Itoa(i), next: prev}
		for j := range 4 {
			v := i + j
			n.tags = append(n.tags, "tag-"+strconv.Itoa(i*j))
			n.vals = append(n.vals, &v)
		}
		m[n.name] = n
		prev = n
		if i%20000 == 0 {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc >= target {
				return m
			}
		}
	}
}

// BenchmarkVerifyBigHeap verifies an argon2id hash at the default
// parameters in a process holding ~50 MB of live heap, as a gateway does
// (Caddy, caches, stores): argon2 allocates 19 MiB per call, so this shows
// what the garbage collector adds to a login.
//
// gc/op is GC cycles per verification and gc-cpu-ms/op the GC's CPU time
// per verification (all Ps); ns/op also includes the page faults of memory
// the runtime takes from the OS as the heap grows between cycles.
func BenchmarkVerifyBigHeap(b *testing.B) {
	h := testHasher()
	const pw = "correct horse battery staple"
	enc, err := h.Hash(pw)
	if err != nil {
		b.Fatal(err)
	}
	bigHeap = buildBigHeap(50)
	b.Cleanup(func() { bigHeap = nil })

	gcCPU := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	metrics.Read(gcCPU)
	cpu0 := gcCPU[0].Value.Float64()
	for b.Loop() {
		if ok, _, err := h.Verify(enc, pw); !ok || err != nil {
			b.Fatal("verification failed")
		}
	}
	runtime.ReadMemStats(&ms1)
	metrics.Read(gcCPU)
	b.ReportMetric(float64(ms1.NumGC-ms0.NumGC)/float64(b.N), "gc/op")
	b.ReportMetric(1000*(gcCPU[0].Value.Float64()-cpu0)/float64(b.N), "gc-cpu-ms/op")
	runtime.KeepAlive(bigHeap)
}
