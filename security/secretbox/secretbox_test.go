package secretbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"nexus.dev/nexus/internal/fsutil"
	"nexus.dev/nexus/security/pki"
)

func newKeyring(t testing.TB) (*Keyring, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	k, err := Generate(path)
	if err != nil {
		t.Fatal(err)
	}
	return k, path
}

const adDB = "/nexus/v1/secrets/prod/db"

func TestRoundTrip(t *testing.T) {
	k, path := newKeyring(t)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi.Mode(), err)
	}
	for _, size := range []int{0, 1, 31, 1024, 1 << 20} {
		plain := bytes.Repeat([]byte{'s'}, size)
		sealed, err := k.Seal(plain, []byte(adDB))
		if err != nil {
			t.Fatal(err)
		}
		if size >= 16 && bytes.Contains(sealed, plain[:16]) {
			t.Errorf("size %d: the sealed value contains the plaintext", size)
		}
		if want := "nxs1:" + k.Primary() + ":"; !strings.HasPrefix(string(sealed), want) {
			t.Errorf("sealed value %.40q does not start with %q", sealed, want)
		}
		again, _ := k.Seal(plain, []byte(adDB))
		if bytes.Equal(sealed, again) {
			t.Errorf("size %d: sealing twice gave the same value (nonce reused)", size)
		}
		// a Keyring loaded from the file opens what another one sealed
		k2, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := k2.Open(sealed, []byte(adDB))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: Open = %d bytes, %v", size, len(got), err)
		}
	}
}

func TestTamper(t *testing.T) {
	k, _ := newKeyring(t)
	sealed, err := k.Seal([]byte("hunter2-and-some-more"), []byte(adDB))
	if err != nil {
		t.Fatal(err)
	}
	for i := range sealed {
		for flip := 1; flip < 256; flip++ {
			bad := bytes.Clone(sealed)
			bad[i] ^= byte(flip)
			if got, err := k.Open(bad, []byte(adDB)); err == nil {
				t.Fatalf("byte %d ^ %#x: opened as %q", i, flip, got)
			}
		}
	}
	for _, cut := range []int{0, 5, len(sealed) / 2, len(sealed) - 1} {
		if _, err := k.Open(sealed[:cut], []byte(adDB)); err == nil {
			t.Errorf("truncated to %d bytes: opened", cut)
		}
	}
	if _, err := k.Open(append(bytes.Clone(sealed), 'A'), []byte(adDB)); err == nil {
		t.Error("with a byte appended: opened")
	}
}

func TestAdditionalData(t *testing.T) {
	k, _ := newKeyring(t)
	sealed, _ := k.Seal([]byte("hunter2"), []byte(adDB))
	for _, ad := range []string{"/nexus/v1/secrets/prod/db2", "/nexus/v1/secrets/dev/db", "", adDB + "\x00"} {
		_, err := k.Open(sealed, []byte(ad))
		if !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "sealed for another store key") {
			t.Errorf("opened under %q: %v, want ErrDecrypt", ad, err)
		}
	}
}

func TestRotation(t *testing.T) {
	k1, path := newKeyring(t)
	old := k1.Primary()
	v1, _ := k1.Seal([]byte("one"), []byte(adDB))

	k2, err := Rotate(path)
	if err != nil {
		t.Fatal(err)
	}
	if ids := k2.KeyIDs(); len(ids) != 2 || ids[0] != old || k2.Primary() == old || ids[1] != k2.Primary() {
		t.Fatalf("after rotation keys %v, primary %s; want %s then a new primary", ids, k2.Primary(), old)
	}
	if got, err := k2.Open(v1, []byte(adDB)); err != nil || string(got) != "one" {
		t.Fatalf("old value after rotation: %q, %v", got, err)
	}
	v2, _ := k2.Seal([]byte("two"), []byte(adDB))
	if !strings.HasPrefix(string(v2), "nxs1:"+k2.Primary()+":") {
		t.Errorf("new value %q not sealed with the new primary", v2)
	}
	if !k2.NeedsReseal(v1) || k2.NeedsReseal(v2) || !k2.NeedsReseal([]byte("plain")) {
		t.Error("NeedsReseal: want true for the old value and a plaintext, false for the new value")
	}
	if k1.NeedsReseal(v1) {
		t.Error("NeedsReseal on the keyring that sealed it: true")
	}

	// a process that has not loaded the rotated file names the key it lacks
	_, err = k1.Open(v2, []byte(adDB))
	want := fmt.Sprintf("sealed with key %s which secrets.key does not hold", k2.Primary())
	if !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "restore the key file") {
		t.Errorf("opening a value of an unknown key: %v, want %q", err, want)
	}

	// reseal everything, then retire the old key
	resealed := v1
	if k2.NeedsReseal(v1) {
		plain, err := k2.Open(v1, []byte(adDB))
		if err != nil {
			t.Fatal(err)
		}
		resealed, _ = k2.Seal(plain, []byte(adDB))
	}
	if _, err := Retire(path, k2.Primary()); err == nil || !strings.Contains(err.Error(), "primary") {
		t.Errorf("retiring the primary: %v", err)
	}
	if _, err := Retire(path, "nope"); err == nil {
		t.Error("retiring a key the file does not hold succeeded")
	}
	k3, err := Retire(path, old)
	if err != nil {
		t.Fatal(err)
	}
	if ids := k3.KeyIDs(); len(ids) != 1 || ids[0] != k2.Primary() {
		t.Fatalf("after retiring %s: keys %v", old, ids)
	}
	if got, err := k3.Open(resealed, []byte(adDB)); err != nil || string(got) != "one" {
		t.Errorf("resealed value: %q, %v", got, err)
	}
	if _, err := k3.Open(v1, []byte(adDB)); !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), old) {
		t.Errorf("value of the retired key: %v", err)
	}
}

// TestConcurrentRotation rotates from several goroutines at once, each
// with its own lock file descriptor as separate processes would have: no
// key may be lost.
func TestConcurrentRotation(t *testing.T) {
	_, path := newKeyring(t)
	var wg sync.WaitGroup
	primaries := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			k, err := Rotate(path)
			if err != nil {
				t.Error(err)
				return
			}
			primaries <- k.Primary()
		})
	}
	wg.Wait()
	close(primaries)
	k, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.KeyIDs()) != 9 {
		t.Fatalf("after 8 concurrent rotations: %d keys, want 9", len(k.KeyIDs()))
	}
	for id := range primaries {
		if !strings.Contains(strings.Join(k.KeyIDs(), ","), id) {
			t.Errorf("key %s made by a rotation is missing", id)
		}
	}
}

func TestKeyFileMode(t *testing.T) {
	k, path := newKeyring(t)
	sealed, _ := k.Seal([]byte("x"), nil)
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if !errors.Is(err, pki.ErrInsecureKeyFileMode) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: %v, want ErrInsecureKeyFileMode and what to do", mode, err)
		}
		if _, err := Rotate(path); !errors.Is(err, pki.ErrInsecureKeyFileMode) {
			t.Errorf("rotate with mode %04o: %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	k2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Open(sealed, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, maxFileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !errors.Is(err, fsutil.ErrTooLarge) {
		t.Errorf("loading a file larger than any key file: %v", err)
	}
	if _, err := Load(filepath.Dir(path)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("loading a directory: %v", err)
	}
}

func TestGenerateKeepsExisting(t *testing.T) {
	k, path := newKeyring(t)
	before, _ := os.ReadFile(path)
	if _, err := Generate(path); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Fatalf("Generate over an existing key file: %v", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("Generate changed an existing key file")
	}
	if _, err := Generate(filepath.Join(t.TempDir(), "missing", FileName)); err == nil {
		t.Error("Generate into a missing directory succeeded")
	}
	// a key file made again from scratch cannot open what the lost one sealed
	sealed, _ := k.Seal([]byte("x"), nil)
	other, _ := newKeyring(t)
	if _, err := other.Open(sealed, nil); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("another key file: %v, want ErrUnknownKey", err)
	}
}

func TestKeyFileErrors(t *testing.T) {
	k, path := newKeyring(t)
	good, _ := os.ReadFile(path)
	id := k.Primary()
	cases := []struct {
		name, data, want string
	}{
		{"empty", "", "no key in it"},
		{"not PEM", "hello\n", "text after key 0"},
		{"trailing text", string(good) + "junk\n", "text after key 1"},
		{"wrong block", strings.ReplaceAll(string(good), "NEXUS SECRETS KEY", "PRIVATE KEY"), `block 1 is a "PRIVATE KEY"`},
		{"no id", strings.Replace(string(good), "Key-Id: "+id, "Key-Xd: "+id, 1), `block 1: Key-Id ""`},
		{"bad id", strings.Replace(string(good), "Key-Id: "+id, "Key-Id: a:b", 1), `Key-Id "a:b"`},
		{"twice", string(good) + string(good), "key " + id + " appears twice"},
		{"short key", "-----BEGIN NEXUS SECRETS KEY-----\nKey-Id: k1\n\nAAAA\n-----END NEXUS SECRETS KEY-----\n", "key k1 is 3 bytes, want 32"},
	}
	for _, c := range cases {
		if err := os.WriteFile(path, []byte(c.data), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want ErrKeyFile saying %q and naming the file", c.name, err, c.want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	k, _ := newKeyring(t)
	for _, v := range []string{"", "hunter2", "nxs1:", "nxs1:" + k.Primary(), "nxs1::AAAA", "nxs1:a b:AAAA", "nxs2:" + k.Primary() + ":AAAA"} {
		if _, err := k.Open([]byte(v), nil); !errors.Is(err, ErrNotSealed) {
			t.Errorf("Open(%q): %v, want ErrNotSealed", v, err)
		}
	}
	for _, v := range []string{"nxs1:" + k.Primary() + ":", "nxs1:" + k.Primary() + ":AAAA", "nxs1:" + k.Primary() + ":!!!!"} {
		if _, err := k.Open([]byte(v), nil); !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), k.Primary()) {
			t.Errorf("Open(%q): %v, want ErrDecrypt naming the key", v, err)
		}
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := newKeyring(f)
	for _, p := range []string{"", "hunter2", strings.Repeat("x", 300)} {
		v, _ := k.Seal([]byte(p), []byte(adDB))
		f.Add(v, []byte(adDB))
	}
	f.Add([]byte("nxs1:zz:AAAA"), []byte{})
	f.Fuzz(func(t *testing.T, value, ad []byte) {
		plain, err := k.Open(value, ad)
		if err == nil && !bytes.HasPrefix(value, []byte("nxs1:"+k.Primary()+":")) {
			t.Fatalf("opened %q, which does not name the key", value)
		}
		if err == nil {
			// what opens must seal and open again to the same plaintext
			again, err := k.Seal(plain, ad)
			if err != nil {
				t.Fatal(err)
			}
			if p2, err := k.Open(again, ad); err != nil || !bytes.Equal(p2, plain) {
				t.Fatalf("reseal: %q, %v", p2, err)
			}
		}
		k.NeedsReseal(value)
	})
}

func FuzzParseFile(f *testing.F) {
	_, path := newKeyring(f)
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add(append(bytes.Clone(good), good...))
	f.Add([]byte("-----BEGIN NEXUS SECRETS KEY-----\nKey-Id: k1\n\nAAAA\n-----END NEXUS SECRETS KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		blocks, err := parseFile(data)
		if err != nil {
			return
		}
		if len(blocks) == 0 {
			t.Fatal("accepted a file with no key")
		}
		for _, b := range blocks {
			if len(b.Bytes) != keyLen || !validID(b.Headers["Key-Id"]) {
				t.Fatalf("accepted block %+v", b)
			}
		}
	})
}

func BenchmarkSeal1KiB(b *testing.B) {
	k, _ := newKeyring(b)
	plain := bytes.Repeat([]byte{'x'}, 1024)
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(plain, []byte(adDB)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen1KiB(b *testing.B) {
	k, _ := newKeyring(b)
	sealed, _ := k.Seal(bytes.Repeat([]byte{'x'}, 1024), []byte(adDB))
	b.SetBytes(1024)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open(sealed, []byte(adDB)); err != nil {
			b.Fatal(err)
		}
	}
}
