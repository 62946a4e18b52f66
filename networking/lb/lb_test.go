package lb

import (
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	fe := Frontend{Addr: netip.MustParseAddrPort("[fd00::1]:80"), Proto: TCP}
	good := Entry{Frontend: fe, Service: "default/web", Backends: []netip.AddrPort{netip.MustParseAddrPort("[fd00:1::2]:8080")}}
	if err := (Table{good}).Validate(); err != nil {
		t.Fatalf("valid table: %v", err)
	}
	for name, tc := range map[string]struct {
		t    Table
		want string
	}{
		"port 0":        {Table{{Frontend: Frontend{Addr: netip.MustParseAddrPort("[fd00::1]:0"), Proto: TCP}}}, "port other than 0"},
		"protocol":      {Table{{Frontend: Frontend{Addr: fe.Addr, Proto: 1}}}, "TCP or UDP"},
		"duplicate":     {Table{good, good}, "also service"},
		"family":        {Table{{Frontend: fe, Backends: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:80")}}}, "other address family"},
		"backend port":  {Table{{Frontend: fe, Backends: []netip.AddrPort{netip.MustParseAddrPort("[fd00::2]:0")}}}, "backend"},
		"zero frontend": {Table{{}}, "want an address"},
	} {
		err := tc.t.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
}

func TestSorted(t *testing.T) {
	a := Entry{Frontend: Frontend{Addr: netip.MustParseAddrPort("10.0.0.2:80"), Proto: TCP},
		Backends: []netip.AddrPort{netip.MustParseAddrPort("10.1.0.3:1"), netip.MustParseAddrPort("10.1.0.2:1")}}
	b := Entry{Frontend: Frontend{Addr: netip.MustParseAddrPort("10.0.0.1:80"), Proto: UDP}}
	s := Table{a, b}.Sorted()
	if s[0].Frontend != b.Frontend || s[1].Backends[0] != netip.MustParseAddrPort("10.1.0.2:1") {
		t.Fatalf("Sorted = %v", s)
	}
	if a.Backends[0] != netip.MustParseAddrPort("10.1.0.3:1") {
		t.Fatal("Sorted changed its input")
	}
}

func TestParseChoice(t *testing.T) {
	for in, want := range map[string]Choice{"": Auto, "auto": Auto, "ebpf": EBPF, "nftables": Nftables} {
		if got, err := ParseChoice(in); err != nil || got != want {
			t.Errorf("ParseChoice(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseChoice("ipvs"); err == nil || !strings.Contains(err.Error(), "auto, ebpf or nftables") {
		t.Errorf("ParseChoice(ipvs): %v", err)
	}
}
