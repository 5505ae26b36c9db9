//go:build race

package collector

// raceEnabled reports a -race build, where allocation counts are not
// meaningful.
const raceEnabled = true
