//go:build race

package argon2id

// raceEnabled shortens the random differential test under the race
// detector, which slows the generic block function about tenfold.
const raceEnabled = true
