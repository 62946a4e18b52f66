package types

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// MilliCPU is an amount of CPU in thousandths of a core. In JSON it is
// written as Kubernetes writes it: "500m", "2", "0.25", or a number of cores.
type MilliCPU int64

// Bytes is an amount of memory. In JSON it is a string with an optional
// binary (Ki Mi Gi Ti Pi Ei) or decimal (k M G T P E) suffix, "256Mi",
// "1G", or a plain number of bytes.
type Bytes int64

// ParseCPU reads a CPU amount: cores ("2", "0.5") or millicores ("500m").
// Amounts finer than a millicore are refused rather than rounded.
func ParseCPU(s string) (MilliCPU, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty CPU amount (write cores, e.g. \"0.5\", or millicores, e.g. \"500m\")")
	}
	if m, ok := strings.CutSuffix(s, "m"); ok {
		v, err := strconv.ParseInt(m, 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("CPU amount %q: millicores must be a whole non-negative number, e.g. \"500m\"", s)
		}
		return MilliCPU(v), nil
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok || r.Sign() < 0 || strings.ContainsAny(s, "/eE") {
		return 0, fmt.Errorf("CPU amount %q: write cores, e.g. \"0.5\", or millicores, e.g. \"500m\"", s)
	}
	r.Mul(r, big.NewRat(1000, 1))
	if !r.IsInt() {
		return 0, fmt.Errorf("CPU amount %q is finer than a millicore", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("CPU amount %q is too large", s)
	}
	return MilliCPU(r.Num().Int64()), nil
}

func (c MilliCPU) String() string {
	if c%1000 == 0 {
		return strconv.FormatInt(int64(c)/1000, 10)
	}
	return strconv.FormatInt(int64(c), 10) + "m"
}

// MarshalJSON writes the amount as a string ("500m", "2").
func (c MilliCPU) MarshalJSON() ([]byte, error) { return json.Marshal(c.String()) }

// UnmarshalJSON reads a string or a number of cores.
func (c *MilliCPU) UnmarshalJSON(b []byte) error {
	v, err := parseQuantityJSON(b, func(s string) (int64, error) {
		m, err := ParseCPU(s)
		return int64(m), err
	})
	*c = MilliCPU(v)
	return err
}

var byteSuffixes = map[string]int64{
	"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
	"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
}

// longest suffixes first, so "Mi" is not read as "M" followed by "i".
var byteSuffixOrder = func() []string {
	keys := slices.Collect(maps.Keys(byteSuffixes))
	slices.SortFunc(keys, func(a, b string) int { return len(b) - len(a) })
	return keys
}()

// ParseBytes reads a memory amount: "256Mi", "1.5Gi", "1G", "1024".
// Fractions must come out as whole bytes.
func ParseBytes(s string) (Bytes, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty memory amount (write e.g. \"256Mi\" or \"1Gi\")")
	}
	num, mult := s, int64(1)
	for _, suf := range byteSuffixOrder {
		if n, ok := strings.CutSuffix(s, suf); ok {
			num, mult = n, byteSuffixes[suf]
			break
		}
	}
	r, ok := new(big.Rat).SetString(num)
	if !ok || r.Sign() < 0 || strings.ContainsAny(num, "/eE") || num == "" {
		return 0, fmt.Errorf("memory amount %q: write a number with an optional suffix Ki, Mi, Gi, Ti (or k, M, G, T), e.g. \"256Mi\"", s)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	if !r.IsInt() {
		return 0, fmt.Errorf("memory amount %q is not a whole number of bytes", s)
	}
	if !r.Num().IsInt64() {
		return 0, fmt.Errorf("memory amount %q is too large", s)
	}
	return Bytes(r.Num().Int64()), nil
}

func (b Bytes) String() string {
	for _, u := range []struct {
		suf  string
		size int64
	}{{"Ei", 1 << 60}, {"Pi", 1 << 50}, {"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if b != 0 && int64(b)%u.size == 0 {
			return strconv.FormatInt(int64(b)/u.size, 10) + u.suf
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalJSON writes the amount as a string ("256Mi").
func (b Bytes) MarshalJSON() ([]byte, error) { return json.Marshal(b.String()) }

// UnmarshalJSON reads a string or a number of bytes.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	v, err := parseQuantityJSON(data, func(s string) (int64, error) {
		n, err := ParseBytes(s)
		return int64(n), err
	})
	*b = Bytes(v)
	return err
}

// parseQuantityJSON accepts a JSON string or number and hands its text to parse.
func parseQuantityJSON(b []byte, parse func(string) (int64, error)) (int64, error) {
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return 0, err
		}
	} else {
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return 0, fmt.Errorf("must be a string such as \"500m\" or \"256Mi\", or a number")
		}
		s = n.String()
	}
	v, err := parse(s)
	if err != nil {
		return 0, err
	}
	if v > math.MaxInt64/2 {
		return 0, fmt.Errorf("amount %q is too large", s)
	}
	return v, nil
}

// IntOrPercent is a count or a percentage of a total ("25%"), as rolling
// updates write maxSurge and maxUnavailable.
type IntOrPercent struct {
	Value     int32
	IsPercent bool
}

// Percent is a percentage value.
func Percent(p int32) IntOrPercent { return IntOrPercent{Value: p, IsPercent: true} }

// Count is an absolute value.
func Count(n int32) IntOrPercent { return IntOrPercent{Value: n} }

// Of resolves the value against total; percentages round up when roundUp.
func (v IntOrPercent) Of(total int32, roundUp bool) int32 {
	if !v.IsPercent {
		return v.Value
	}
	n := int64(v.Value) * int64(total)
	if roundUp {
		return int32((n + 99) / 100)
	}
	return int32(n / 100)
}

func (v IntOrPercent) String() string {
	if v.IsPercent {
		return strconv.Itoa(int(v.Value)) + "%"
	}
	return strconv.Itoa(int(v.Value))
}

// IsZero reports whether v is unset (a count of 0).
func (v IntOrPercent) IsZero() bool { return v == IntOrPercent{} }

// MarshalJSON writes a number, or a string for a percentage.
func (v IntOrPercent) MarshalJSON() ([]byte, error) {
	if v.IsPercent {
		return json.Marshal(v.String())
	}
	return json.Marshal(v.Value)
}

// UnmarshalJSON reads a whole number or a string "N%" or "N".
func (v *IntOrPercent) UnmarshalJSON(b []byte) error {
	var s string
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	} else {
		s = string(b)
	}
	p, isPct := strings.CutSuffix(s, "%")
	n, err := strconv.ParseInt(p, 10, 32)
	if err != nil || n < 0 {
		return fmt.Errorf("must be a whole non-negative number or a percentage such as \"25%%\", not %s", b)
	}
	*v = IntOrPercent{Value: int32(n), IsPercent: isPct}
	return nil
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
