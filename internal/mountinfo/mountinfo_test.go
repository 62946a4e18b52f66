package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:             `/plain`,
		`/with\040space`:     `/with space`,
		`/tab\011and\012nl`:  "/tab\tand\nnl",
		`/back\134slash`:     `/back\slash`,
		`/not\09octal`:       `/not\09octal`,
		`/short\04`:          `/short\04`,
		`/two\040\040spaces`: `/two  spaces`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsMountPoint(t *testing.T) {
	if ok, err := IsMountPoint("/proc"); err != nil || !ok {
		t.Errorf("IsMountPoint(/proc) = %v, %v; want true (procfs is mounted there)", ok, err)
	}
	if ok, err := IsMountPoint("/proc/self"); err != nil || ok {
		t.Errorf("IsMountPoint(/proc/self) = %v, %v; want false", ok, err)
	}
}
