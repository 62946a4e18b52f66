package pki

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFilePermissions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca.key")
	key, _ := GenerateKey()
	if err := WriteKeyFile(path, key, nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key written with mode %04o", st.Mode().Perm())
	}
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o604, false},
		{0o644, false},
		{0o660, false},
	}
	for _, tt := range tests {
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		got, err := ReadKeyFile(path, nil)
		if tt.ok {
			if err != nil || !got.Equal(key) {
				t.Errorf("mode %04o: %v", tt.mode, err)
			}
			continue
		}
		if !errors.Is(err, ErrInsecureKeyFileMode) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %04o: err = %v", tt.mode, err)
		}
	}
	if _, err := ReadKeyFile(dir, nil); err == nil {
		t.Error("read a directory as a key")
	}
}

func TestEncryptedKey(t *testing.T) {
	key, _ := GenerateKey()
	pass := []byte("correct horse battery staple")
	enc, err := MarshalKey(key, pass)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(enc, []byte("BEGIN NEXUS ENCRYPTED PRIVATE KEY")) || !bytes.Contains(enc, []byte("Kdf: scrypt")) {
		t.Fatalf("unexpected encoding:\n%s", enc)
	}
	plain, _ := MarshalKey(key, nil)
	if bytes.Contains(enc, plain[40:80]) {
		t.Fatal("encrypted file contains the plain key")
	}
	got, err := ParseKey(enc, pass)
	if err != nil || !got.Equal(key) {
		t.Fatalf("round trip: %v", err)
	}

	tampered := bytes.Replace(enc, []byte("Scrypt-R: 8"), []byte("Scrypt-R: 9"), 1)
	tests := []struct {
		name string
		data []byte
		pass []byte
		want error
		msg  string
	}{
		{"wrong passphrase", enc, []byte("wrong"), ErrWrongPassphrase, "wrong passphrase"},
		{"no passphrase", enc, nil, ErrPassphraseRequired, "--passphrase-file"},
		{"edited header", tampered, pass, ErrWrongPassphrase, ""},
		{"not PEM", []byte("junk"), pass, nil, "not PEM"},
		{"huge scrypt N", bytes.Replace(enc, []byte("Scrypt-N: 32768"), []byte("Scrypt-N: 1073741824"), 1), pass, nil, "out-of-range"},
	}
	for _, tt := range tests {
		_, err := ParseKey(tt.data, tt.pass)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
	// A plain key does not need the passphrase, and ignores one.
	if got, err := ParseKey(plain, pass); err != nil || !got.Equal(key) {
		t.Errorf("plain key: %v", err)
	}
}
