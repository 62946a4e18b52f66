package seccomp

import (
	"encoding/json"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// FuzzCompile feeds JSON profiles to the compiler: it must never panic, and
// every program it produces must pass the structural check and run in the
// emulator.
func FuzzCompile(f *testing.F) {
	def, err := json.Marshal(DefaultProfile())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(def)
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"],"syscalls":[{"names":["getcwd","read"],"action":"SCMP_ACT_ERRNO","errnoRet":42,"args":[{"index":1,"value":18446744073709551615,"op":"SCMP_CMP_LE"},{"index":1,"value":4294967296,"op":"SCMP_CMP_GT"}]}]}`))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_KILL_PROCESS","flags":["SECCOMP_FILTER_FLAG_LOG"],"syscalls":[{"names":["personality"],"action":"SCMP_ACT_TRACE","errnoRet":7,"args":[{"index":0,"value":255,"valueTwo":8,"op":"SCMP_CMP_MASKED_EQ"}]},{"names":["personality"],"action":"SCMP_ACT_LOG"}]}`))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s specs.LinuxSeccomp
		if json.Unmarshal(data, &s) != nil {
			return
		}
		verr := Validate(&s)
		for _, native := range []archIndex{archAMD64, archARM64} {
			fl, err := compile(&s, native)
			if err != nil {
				continue
			}
			if native == archAMD64 && verr != nil {
				t.Fatalf("Validate: %v, but compile succeeded", verr)
			}
			v := vm(t, fl) // runs checkProgram
			for _, a := range archInfos {
				for _, c := range []call{
					{arch: a.audit, nr: 0},
					{arch: a.audit, nr: x32SyscallBit | 1, args: [6]uint64{1 << 32, 1}},
					{arch: a.audit, nr: 0xffffffff, args: [6]uint64{^uint64(0), ^uint64(0)}},
				} {
					if _, err := v.Run(c.data()); err != nil {
						t.Fatalf("run: %v", err)
					}
				}
			}
		}
	})
}
