//go:build cgo

package uplink

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/vhostd/vhostd/switch/dpdk"
)

// testEAL is the process's EAL, shared by every test (DPDK allows one init
// per process).
var (
	testEAL *dpdk.EAL
	testLog *logrus.Entry
)

func TestMain(m *testing.M) {
	flag.Parse()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	if testing.Verbose() {
		log.SetLevel(logrus.DebugLevel)
	}
	testLog = logrus.NewEntry(log)
	args := dpdk.EALArgs(nil, dpdk.ArgOptions{Prefix: fmt.Sprintf("vhostd-uplinktest-%d", os.Getpid()), Core: -1})
	var err error
	if testEAL, err = dpdk.Init(args, testLog); err != nil {
		fmt.Fprintln(os.Stderr, "EAL init:", err)
		os.Exit(1)
	}
	code := m.Run()
	if err := testEAL.Cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, "EAL cleanup:", err)
		code = 1
	}
	os.Exit(code)
}
