package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/crypto/scrypt"

	"nexus.dev/nexus/internal/fsutil"
)

// Key files are PEM. A plain key is a PKCS#8 "PRIVATE KEY" block. A key
// encrypted at rest with a passphrase is Nexus's own block:
//
//	-----BEGIN NEXUS ENCRYPTED PRIVATE KEY-----
//	Kdf: scrypt
//	Scrypt-N: 32768
//	Scrypt-R: 8
//	Scrypt-P: 1
//	Salt: <32 hex digits>
//	Cipher: AES-256-GCM
//	Nonce: <24 hex digits>
//
//	<base64 of AES-256-GCM(PKCS#8 DER)>
//	-----END NEXUS ENCRYPTED PRIVATE KEY-----
//
// The AES key is scrypt(passphrase, salt, N, r, p, 32). The headers are the
// GCM additional data, so editing a parameter fails like a wrong passphrase.
const (
	plainKeyType     = "PRIVATE KEY"
	encryptedKeyType = "NEXUS ENCRYPTED PRIVATE KEY"
	scryptN          = 1 << 15
	scryptR          = 8
	scryptP          = 1
	maxScryptN       = 1 << 20
	// maxKeyFileSize bounds what ReadKeyFile reads: a P-256 key file is
	// about 240 bytes, 400 encrypted.
	maxKeyFileSize = 64 << 10
)

// Key file errors; test with errors.Is.
var (
	ErrWrongPassphrase     = errors.New("wrong passphrase (or the key file is damaged)")
	ErrPassphraseRequired  = errors.New("the key is encrypted: give its passphrase (--passphrase-file)")
	ErrInsecureKeyFileMode = errors.New("key file is readable by group or others")
)

// MarshalKey encodes key as PEM, encrypted when passphrase is not empty.
func MarshalKey(key *ecdsa.PrivateKey, passphrase []byte) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	if len(passphrase) == 0 {
		return pem.EncodeToMemory(&pem.Block{Type: plainKeyType, Bytes: der}), nil
	}
	salt := make([]byte, 16)
	nonce := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	h := map[string]string{
		"Kdf":      "scrypt",
		"Scrypt-N": strconv.Itoa(scryptN),
		"Scrypt-R": strconv.Itoa(scryptR),
		"Scrypt-P": strconv.Itoa(scryptP),
		"Salt":     hex.EncodeToString(salt),
		"Cipher":   "AES-256-GCM",
		"Nonce":    hex.EncodeToString(nonce),
	}
	aead, err := keyAEAD(passphrase, salt, scryptN, scryptR, scryptP)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: encryptedKeyType, Headers: h, Bytes: aead.Seal(nil, nonce, der, headerAD(h))}), nil
}

// ParseKey decodes a key written by MarshalKey. An encrypted key needs its
// passphrase.
func ParseKey(data, passphrase []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("private key: not PEM")
	}
	der := block.Bytes
	switch block.Type {
	case plainKeyType:
	case encryptedKeyType:
		if len(passphrase) == 0 {
			return nil, ErrPassphraseRequired
		}
		var err error
		if der, err = decryptKey(block, passphrase); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("private key: PEM block %q, expected %q or %q", block.Type, plainKeyType, encryptedKeyType)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key: type %T, expected ECDSA P-256", k)
	}
	if err := checkKey(&ec.PublicKey); err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	return ec, nil
}

func decryptKey(block *pem.Block, passphrase []byte) ([]byte, error) {
	h := block.Headers
	if h["Kdf"] != "scrypt" || h["Cipher"] != "AES-256-GCM" {
		return nil, fmt.Errorf("encrypted key: unsupported kdf %q / cipher %q", h["Kdf"], h["Cipher"])
	}
	n, errN := strconv.Atoi(h["Scrypt-N"])
	r, errR := strconv.Atoi(h["Scrypt-R"])
	p, errP := strconv.Atoi(h["Scrypt-P"])
	salt, errS := hex.DecodeString(h["Salt"])
	nonce, errNo := hex.DecodeString(h["Nonce"])
	if err := errors.Join(errN, errR, errP, errS, errNo); err != nil || n < 2 || n > maxScryptN || r < 1 || r > 32 || p < 1 || p > 16 || len(nonce) != 12 || len(salt) < 8 {
		return nil, errors.New("encrypted key: bad or out-of-range headers")
	}
	aead, err := keyAEAD(passphrase, salt, n, r, p)
	if err != nil {
		return nil, err
	}
	der, err := aead.Open(nil, nonce, block.Bytes, headerAD(h))
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	return der, nil
}

func keyAEAD(passphrase, salt []byte, n, r, p int) (cipher.AEAD, error) {
	k, err := scrypt.Key(passphrase, salt, n, r, p, 32)
	if err != nil {
		return nil, fmt.Errorf("derive key from passphrase: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func headerAD(h map[string]string) []byte {
	var ad []byte
	for _, k := range []string{"Kdf", "Scrypt-N", "Scrypt-R", "Scrypt-P", "Salt", "Cipher", "Nonce"} {
		ad = append(ad, k+"="+h[k]+"\n"...)
	}
	return ad
}

// WriteKeyFile writes key to path with mode 0600 (atomically), encrypted
// when passphrase is not empty.
func WriteKeyFile(path string, key *ecdsa.PrivateKey, passphrase []byte) error {
	data, err := MarshalKey(key, passphrase)
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, data, 0o600)
}

// ReadKeyFile reads a key file, refusing one that group or others may read:
// such a key must be treated as leaked.
func ReadKeyFile(path string, passphrase []byte) (*ecdsa.PrivateKey, error) {
	data, err := ReadPrivateFile(path, maxKeyFileSize)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	return k, nil
}

// ReadPrivateFile reads a file that holds private keys: a regular file of
// at most limit bytes that neither group nor others may read (if they may,
// the key must be treated as leaked, so it is refused with
// ErrInsecureKeyFileMode).
func ReadPrivateFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read key %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("read key %s: %w (mode %04o): run chmod 600 %s, and replace the key if others may have copied it", path, ErrInsecureKeyFileMode, perm, path)
	}
	data, err := fsutil.ReadLimit(f, path, limit)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	return data, nil
}

// WriteFileAtomic writes data to a temporary file in path's directory,
// syncs it and renames it over path, so a reader sees the old or the new
// file, never a torn one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPattern(filepath.Base(path)))
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_ = fsutil.SyncDir(dir) // the rename is done; a failed sync only weakens crash safety
	return nil
}

// tempPattern names WriteFileAtomic's temporary file after the target.
// For a long target it cuts the name so that the temporary one is no
// longer than the target (os.CreateTemp appends up to 10 digits): a name
// the file system allows must not fail for its temporary file.
func tempPattern(base string) string {
	const suffix, digits = ".tmp", 10
	if len(base) > 64 {
		base = base[:len(base)-len(".")-len(suffix)-digits]
	}
	return "." + base + suffix + "*"
}
