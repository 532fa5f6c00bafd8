//go:build !amd64

package tsc

import "time"

const isTSC = false

var epoch = time.Now()

func now() uint64 { return uint64(time.Since(epoch)) }
