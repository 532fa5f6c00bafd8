package tsc

const isTSC = true

// rdtsc returns the time-stamp counter (RDTSC). It is not ordered with
// the instructions around it, which is what a per-burst clock wants: a
// few cycles of skew per reading, no pipeline drain.
//
//go:noescape
func rdtsc() uint64

func now() uint64 { return rdtsc() }
