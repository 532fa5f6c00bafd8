package nettest

import (
	"os"
	"testing"
)

func TestNamespaceAndVeth(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ns, err := NewNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	v, err := NewVeth("vdnt0", "vdnt1", ns)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if !LinkExists("vdnt0") || LinkExists("vdnt1") || !ns.HasLink("vdnt1") {
		t.Fatalf("veth ends: here %v/%v, in ns %v", LinkExists("vdnt0"), LinkExists("vdnt1"), ns.HasLink("vdnt1"))
	}
	if err := ns.Configure("vdnt1", "10.9.99.2/24", 1400); err != nil {
		t.Fatal(err)
	}
	if err := ns.SetUp("vdnt1", false); err != nil {
		t.Fatal(err)
	}
	if p, err := Promiscuous("vdnt0"); err != nil || p {
		t.Fatalf("Promiscuous = %v, %v", p, err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if LinkExists("vdnt0") || ns.HasLink("vdnt1") {
		t.Fatal("veth pair not deleted")
	}
}
