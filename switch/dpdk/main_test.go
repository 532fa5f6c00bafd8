//go:build cgo

package dpdk

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/sirupsen/logrus"
)

// testEAL is the process's EAL: DPDK allows one init per process, so every
// test shares it.
var testEAL *EAL

func TestMain(m *testing.M) {
	flag.Parse()
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	if testing.Verbose() {
		log.SetLevel(logrus.DebugLevel)
	}
	args := EALArgs(nil, ArgOptions{Prefix: fmt.Sprintf("vhostd-dpdktest-%d", os.Getpid()), Core: -1})
	var err error
	testEAL, err = Init(args, logrus.NewEntry(log))
	if err != nil {
		fmt.Fprintln(os.Stderr, "EAL init:", err)
		os.Exit(1)
	}
	code := m.Run()
	dir := testEAL.RuntimeDir()
	if err := testEAL.Cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, "EAL cleanup:", err)
		code = 1
	}
	if _, err := os.Stat(dir); err == nil {
		fmt.Fprintln(os.Stderr, "EAL runtime directory left behind:", dir)
		code = 1
	}
	os.Exit(code)
}
