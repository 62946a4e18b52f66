package mvcc

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenSurvivesEveryDamagedPage damages each page of a store in turn,
// three ways, and opens it: Open either accepts the file (the page was
// free, or only a value changed) or refuses it as corrupt, and never
// crashes the process. (bbolt walks the pages in goroutines of its own,
// where a fault cannot be recovered: before the file was read in full
// first, a key read out of a damaged page crashed the test.)
func TestOpenSurvivesEveryDamagedPage(t *testing.T) {
	path := storeFile(t, 200, put("big", strings.Repeat("b", 20000))) // with overflow pages
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const pageSize = 4096
	damages := []struct {
		name   string
		damage func(page []byte, r *rand.Rand)
	}{
		{"garbage", func(page []byte, r *rand.Rand) {
			for i := range page {
				page[i] = byte(r.Uint32())
			}
		}},
		{"eight bytes", func(page []byte, r *rand.Rand) {
			for range 8 {
				page[r.IntN(len(page))] = byte(r.Uint32())
			}
		}},
		{"header", func(page []byte, r *rand.Rand) { // flags, count, overflow
			for i := 8; i < 16; i++ {
				page[i] = byte(r.Uint32())
			}
		}},
	}
	accepted, refused := 0, 0
	for _, d := range damages {
		for p := 2; p < len(orig)/pageSize; p++ { // pages 0 and 1 are the metas
			b := append([]byte(nil), orig...)
			d.damage(b[p*pageSize:(p+1)*pageSize], rand.New(rand.NewPCG(uint64(p), 7)))
			damaged := filepath.Join(t.TempDir(), "db")
			if err := os.WriteFile(damaged, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(damaged, Options{UnsafeNoFsync: true})
			if err != nil {
				refused++
				if !errors.Is(err, ErrCorrupt) {
					t.Errorf("%s in page %d: %v, want ErrCorrupt", d.name, p, err)
				}
				continue
			}
			accepted++
			s.Close()
		}
	}
	t.Logf("%d pages: %d damaged files refused, %d accepted", len(orig)/pageSize, refused, accepted)
	if refused == 0 {
		t.Fatal("no damaged file was refused")
	}
}
