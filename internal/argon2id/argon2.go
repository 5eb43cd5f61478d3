// Copyright 2017 The Go Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

// Package argon2id is Argon2id (RFC 9106) computed in caller-provided,
// reusable block memory.
//
// It is a fork of golang.org/x/crypto/argon2 at golang.org/x/crypto v0.59.0
// (files argon2.go, blake2b.go, blamka_amd64.go, blamka_amd64.s,
// blamka_generic.go, blamka_loong64.go, blamka_loong64.s, blamka_ref.go and
// argon2_test.go; BSD license in LICENSE). x/crypto/argon2 allocates its
// memory (19 MiB at the OWASP parameters) afresh on every call and has no API
// to reuse it; in a long-running server with a sizeable heap that costs page
// faults on memory the runtime got back from or returned to the OS, zeroing,
// and extra GC cycles on every hash. Key computes the same output as
// argon2.IDKey but in the blocks of a Memory that the caller keeps between
// calls.
//
// Changes from upstream, each marked "fork:" in the code, everything else
// being a verbatim copy (only the package clause differs), so the package can
// be re-synced by diffing against a newer x/crypto:
//
//   - argon2.go: the public Key (Argon2i) and IDKey are replaced by Key
//     (Argon2id, with a *Memory argument) and the Memory type; deriveKey and
//     initBlocks take the block memory instead of allocating it; the package
//     documentation is this comment.
//   - argon2.go, processBlocks: the first pass writes each block with
//     processBlock instead of XORing into it with processBlockXOR. Upstream's
//     XOR in the first pass is equivalent only because make returns zeroed
//     memory; with reused memory it would mix stale blocks into the result.
//     Argon2 v1.3 overwrites the block in the first pass (RFC 9106 section
//     3.2, step 5) and XORs only in later passes (step 6), which is what this
//     does, and it reads no block before writing it (see processBlocks).
//   - argon2_test.go: deriveKey calls take the extra Memory argument; the
//     Argon2i and Argon2d known-answer tests are kept, since the internal
//     modes are unchanged. The fork's own tests are in fork_test.go.
package argon2id

import (
	"encoding/binary"
	"sync"

	"golang.org/x/crypto/blake2b"
)

// The Argon2 version implemented by this package.
const Version = 0x13

const (
	argon2d = iota
	argon2i
	argon2id
)

// fork: upstream's Key (Argon2i) and IDKey are replaced by Key and Memory.

// Key derives a key from the password, salt, and cost parameters using
// Argon2id, returning a byte slice of length keyLen. It returns exactly what
// golang.org/x/crypto/argon2.IDKey(password, salt, time, memory, threads,
// keyLen) returns, and panics in the same cases (time or threads zero).
//
// The blocks are computed in mem, which is grown first if it holds fewer
// blocks than the computation needs (memory KiB, rounded down to a multiple
// of 4*threads, at least 8*threads). Its previous contents never affect the
// result. A nil mem allocates fresh memory, as upstream does. mem must not be
// used by another call while Key runs.
func Key(password, salt []byte, time, memory uint32, threads uint8, keyLen uint32, mem *Memory) []byte {
	return deriveKey(argon2id, password, salt, nil, nil, time, memory, threads, keyLen, mem)
}

// Memory is reusable block memory for Key. The zero value is an empty
// Memory, which the first Key call grows to the size it needs. A Memory never
// shrinks, and is not safe for concurrent use. Between calls it holds the
// blocks of the last computation, which are derived from that password (as
// the blocks that upstream leaves to the garbage collector are).
type Memory struct {
	blocks []block
}

// NewMemory returns a Memory that already holds memory KiB of blocks: enough
// for Key with that memory parameter and any threads up to memory/8.
func NewMemory(memory uint32) *Memory {
	return &Memory{blocks: make([]block, memory)}
}

// Size returns the block memory m holds, in KiB (one block is 1 KiB).
func (m *Memory) Size() uint32 {
	if m == nil {
		return 0
	}
	return uint32(len(m.blocks))
}

// get returns n blocks of m, growing m first if it holds fewer. The contents
// are whatever the last computation left.
func (m *Memory) get(n uint32) []block {
	if m == nil {
		return make([]block, n)
	}
	if uint32(len(m.blocks)) < n {
		m.blocks = nil // let the old blocks go before allocating the new
		m.blocks = make([]block, n)
	}
	return m.blocks[:n]
}

func deriveKey(mode int, password, salt, secret, data []byte, time, memory uint32, threads uint8, keyLen uint32, mem *Memory) []byte { // fork: mem
	if time < 1 {
		panic("argon2: number of rounds too small")
	}
	if threads < 1 {
		panic("argon2: parallelism degree too low")
	}
	h0 := initHash(password, salt, secret, data, time, memory, uint32(threads), keyLen, mode)

	memory = memory / (syncPoints * uint32(threads)) * (syncPoints * uint32(threads))
	if memory < 2*syncPoints*uint32(threads) {
		memory = 2 * syncPoints * uint32(threads)
	}
	B := initBlocks(&h0, mem.get(memory), memory, uint32(threads)) // fork: mem.get
	processBlocks(B, time, memory, uint32(threads), mode)
	return extractKey(B, memory, uint32(threads), keyLen)
}

const (
	blockLength = 128
	syncPoints  = 4
)

type block [blockLength]uint64

func initHash(password, salt, key, data []byte, time, memory, threads, keyLen uint32, mode int) [blake2b.Size + 8]byte {
	var (
		h0     [blake2b.Size + 8]byte
		params [24]byte
		tmp    [4]byte
	)

	b2, _ := blake2b.New512(nil)
	binary.LittleEndian.PutUint32(params[0:4], threads)
	binary.LittleEndian.PutUint32(params[4:8], keyLen)
	binary.LittleEndian.PutUint32(params[8:12], memory)
	binary.LittleEndian.PutUint32(params[12:16], time)
	binary.LittleEndian.PutUint32(params[16:20], uint32(Version))
	binary.LittleEndian.PutUint32(params[20:24], uint32(mode))
	b2.Write(params[:])
	binary.LittleEndian.PutUint32(tmp[:], uint32(len(password)))
	b2.Write(tmp[:])
	b2.Write(password)
	binary.LittleEndian.PutUint32(tmp[:], uint32(len(salt)))
	b2.Write(tmp[:])
	b2.Write(salt)
	binary.LittleEndian.PutUint32(tmp[:], uint32(len(key)))
	b2.Write(tmp[:])
	b2.Write(key)
	binary.LittleEndian.PutUint32(tmp[:], uint32(len(data)))
	b2.Write(tmp[:])
	b2.Write(data)
	b2.Sum(h0[:0])
	return h0
}

func initBlocks(h0 *[blake2b.Size + 8]byte, B []block, memory, threads uint32) []block { // fork: B from the caller
	var block0 [1024]byte
	for lane := uint32(0); lane < threads; lane++ {
		j := lane * (memory / threads)
		binary.LittleEndian.PutUint32(h0[blake2b.Size+4:], lane)

		binary.LittleEndian.PutUint32(h0[blake2b.Size:], 0)
		blake2bHash(block0[:], h0[:])
		for i := range B[j+0] {
			B[j+0][i] = binary.LittleEndian.Uint64(block0[i*8:])
		}

		binary.LittleEndian.PutUint32(h0[blake2b.Size:], 1)
		blake2bHash(block0[:], h0[:])
		for i := range B[j+1] {
			B[j+1][i] = binary.LittleEndian.Uint64(block0[i*8:])
		}
	}
	return B
}

func processBlocks(B []block, time, memory, threads uint32, mode int) {
	lanes := memory / threads
	segments := lanes / syncPoints

	processSegment := func(n, slice, lane uint32, wg *sync.WaitGroup) {
		var addresses, in, zero block
		if mode == argon2i || (mode == argon2id && n == 0 && slice < syncPoints/2) {
			in[0] = uint64(n)
			in[1] = uint64(lane)
			in[2] = uint64(slice)
			in[3] = uint64(memory)
			in[4] = uint64(time)
			in[5] = uint64(mode)
		}

		index := uint32(0)
		if n == 0 && slice == 0 {
			index = 2 // we have already generated the first two blocks
			if mode == argon2i || mode == argon2id {
				in[6]++
				processBlock(&addresses, &in, &zero)
				processBlock(&addresses, &addresses, &zero)
			}
		}

		offset := lane*lanes + slice*segments + index
		var random uint64
		for index < segments {
			prev := offset - 1
			if index == 0 && slice == 0 {
				prev += lanes // last block in lane
			}
			if mode == argon2i || (mode == argon2id && n == 0 && slice < syncPoints/2) {
				if index%blockLength == 0 {
					in[6]++
					processBlock(&addresses, &in, &zero)
					processBlock(&addresses, &addresses, &zero)
				}
				random = addresses[index%blockLength]
			} else {
				random = B[prev][0]
			}
			newOffset := indexAlpha(random, lanes, segments, threads, n, slice, lane, index)
			// fork: upstream XORs in every pass, relying on zeroed memory in the
			// first. Pass 0 overwrites B[offset] (RFC 9106 section 3.2 step 5)
			// and reads only blocks it has already written in this
			// computation: prev, and a reference that indexAlpha draws, for
			// n == 0, from the blocks before this one in this lane or from the
			// finished slices of the other lanes (s == 0, m covers only those).
			// Later passes read and XOR into blocks that pass 0 wrote. So no
			// block is read before it is written, and stale memory cannot leak
			// into the result.
			if n == 0 {
				processBlock(&B[offset], &B[prev], &B[newOffset])
			} else {
				processBlockXOR(&B[offset], &B[prev], &B[newOffset])
			}
			index, offset = index+1, offset+1
		}
		wg.Done()
	}

	for n := uint32(0); n < time; n++ {
		for slice := uint32(0); slice < syncPoints; slice++ {
			var wg sync.WaitGroup
			for lane := uint32(0); lane < threads; lane++ {
				wg.Add(1)
				go processSegment(n, slice, lane, &wg)
			}
			wg.Wait()
		}
	}

}

func extractKey(B []block, memory, threads, keyLen uint32) []byte {
	lanes := memory / threads
	for lane := uint32(0); lane < threads-1; lane++ {
		for i, v := range B[(lane*lanes)+lanes-1] {
			B[memory-1][i] ^= v
		}
	}

	var block [1024]byte
	for i, v := range B[memory-1] {
		binary.LittleEndian.PutUint64(block[i*8:], v)
	}
	key := make([]byte, keyLen)
	blake2bHash(key, block[:])
	return key
}

func indexAlpha(rand uint64, lanes, segments, threads, n, slice, lane, index uint32) uint32 {
	refLane := uint32(rand>>32) % threads
	if n == 0 && slice == 0 {
		refLane = lane
	}
	m, s := 3*segments, ((slice+1)%syncPoints)*segments
	if lane == refLane {
		m += index
	}
	if n == 0 {
		m, s = slice*segments, 0
		if slice == 0 || lane == refLane {
			m += index
		}
	}
	if index == 0 || lane == refLane {
		m--
	}
	return phi(rand, uint64(m), uint64(s), refLane, lanes)
}

func phi(rand, m, s uint64, lane, lanes uint32) uint32 {
	p := rand & 0xFFFFFFFF
	p = (p * p) >> 32
	p = (p * m) >> 32
	return lane*lanes + uint32((s+m-(p+1))%uint64(lanes))
}
