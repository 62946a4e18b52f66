package spec

import (
	"encoding"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"
)

// DecodeFast decodes a config.json or state.json document into v (a
// pointer to a struct) the way json.Unmarshal does, for the documents real
// tools write, and reports false for anything it leaves to json.Unmarshal:
// invalid JSON, a value of the wrong type, a key that is not a field's
// exact name but that json.Unmarshal might match to one (it matches names
// without regard to case), a key given twice, invalid UTF-8, and types that
// decode text themselves (encoding.TextUnmarshaler). A json.Unmarshaler,
// such as time.Time, gets its value as json.Unmarshal would give it. A
// false return says nothing about the document; the caller decodes it
// again with json.Unmarshal, which also words the error.
//
// Why: every OCI call is a new process, and encoding/json's first decode
// of a type builds its codecs for every struct type it meets (sorted field
// lists, case-folded name maps) by reflection. For a hardened config.json
// that was 1.9 ms of a container start, against 0.05 ms for decoding the
// same document again in the same process. This decoder looks fields up
// by their exact JSON name in a small map per struct type, built when the
// type is first met, and does nothing else. FuzzValidateSpec and runtime's
// FuzzReadState check that whatever it accepts, json.Unmarshal decodes to
// the same value.
func DecodeFast(data []byte, v any) bool {
	if !json.Valid(data) {
		return false
	}
	d := fastDecoder{data: data}
	return d.value(reflect.ValueOf(v).Elem())
}

type fastDecoder struct {
	data []byte
	pos  int
}

// fastStruct is what DecodeFast knows of a struct type: its fields by
// exact JSON name, and their names in order (to spot a key that differs
// from one only in case). ok is false for a type it leaves to
// json.Unmarshal.
type fastStruct struct {
	byName map[string]int // field index
	names  []string
	ok     bool
}

var fastStructs sync.Map // reflect.Type -> *fastStruct

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func fastStructOf(t reflect.Type) *fastStruct {
	if s, ok := fastStructs.Load(t); ok {
		return s.(*fastStruct)
	}
	s := &fastStruct{byName: map[string]int{}, ok: true}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Anonymous {
			s.ok = false // embedded fields follow json's promotion rules
			break
		}
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "string") || !validTagName(name) {
			s.ok = false
			break
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := s.byName[name]; dup {
			s.ok = false
			break
		}
		s.byName[name] = i
		s.names = append(s.names, name)
	}
	fastStructs.Store(t, s)
	return s
}

// validTagName reports a tag name json.Unmarshal takes as it is (it ignores
// names with other characters and uses the Go field's name instead).
func validTagName(name string) bool {
	for _, c := range name {
		if c > 127 || !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("_-.", c)) {
			return false
		}
	}
	return true
}

// known reports whether json.Unmarshal could match key to one of the
// fields: names are compared without regard to case (with Unicode folding,
// hence any key that is not ASCII counts).
func (s *fastStruct) known(key string) bool {
	for i := 0; i < len(key); i++ {
		if key[i] >= utf8.RuneSelf {
			return true
		}
	}
	for _, n := range s.names {
		if strings.EqualFold(n, key) {
			return true
		}
	}
	return false
}

func (d *fastDecoder) skipSpace() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// peek returns the next byte that is not white space, or 0 at the end.
func (d *fastDecoder) peek() byte {
	d.skipSpace()
	if d.pos >= len(d.data) {
		return 0
	}
	return d.data[d.pos]
}

func (d *fastDecoder) consume(c byte) bool {
	if d.peek() != c {
		return false
	}
	d.pos++
	return true
}

// value decodes the next value into v.
func (d *fastDecoder) value(v reflect.Value) bool {
	c := d.peek()
	t := v.Type()
	if t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface {
		if pt := reflect.PointerTo(t); !pt.Implements(jsonUnmarshaler) && pt.Implements(textUnmarshaler) {
			return false
		} else if pt.Implements(jsonUnmarshaler) {
			if c == 'n' {
				return false // json.Unmarshal hands null to the type
			}
			// As json.Unmarshal does: the type decodes the value itself
			// (time.Time in state.json).
			start := d.pos
			if !d.skip() {
				return false
			}
			return v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(d.data[start:d.pos]) == nil
		}
	}
	if c == 'n' {
		// null leaves the value as it is, which here is always its zero.
		d.pos += len("null")
		return true
	}
	switch t.Kind() {
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if !d.value(p.Elem()) {
			return false
		}
		v.Set(p)
		return true
	case reflect.Struct:
		return c == '{' && d.object(v)
	case reflect.Slice:
		if c != '[' || t.Elem().Kind() == reflect.Uint8 {
			return false
		}
		return d.array(v)
	case reflect.Map:
		if c != '{' || t.Key().Kind() != reflect.String || t.Key() != reflect.TypeFor[string]() {
			return false
		}
		return d.mapObject(v)
	case reflect.String:
		s, ok := d.str()
		if ok {
			v.SetString(s)
		}
		return ok
	case reflect.Bool:
		// The document is valid JSON: t starts true, f starts false.
		switch c {
		case 't':
			d.pos += len("true")
			v.SetBool(true)
		case 'f':
			d.pos += len("false")
		default:
			return false
		}
		return true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		lit, ok := d.integer()
		if !ok {
			return false
		}
		n, err := strconv.ParseInt(lit, 10, 64)
		if err != nil || v.OverflowInt(n) {
			return false
		}
		v.SetInt(n)
		return true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		lit, ok := d.integer()
		if !ok {
			return false
		}
		n, err := strconv.ParseUint(lit, 10, 64)
		if err != nil || v.OverflowUint(n) {
			return false
		}
		v.SetUint(n)
		return true
	}
	return false
}

// integer returns the next number if it is written as an integer.
func (d *fastDecoder) integer() (string, bool) {
	start := d.pos
	if d.pos < len(d.data) && d.data[d.pos] == '-' {
		d.pos++
	}
	for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' {
		d.pos++
	}
	if d.pos == start || d.pos < len(d.data) && strings.IndexByte(".eE", d.data[d.pos]) >= 0 {
		return "", false
	}
	return string(d.data[start:d.pos]), true
}

func (d *fastDecoder) object(v reflect.Value) bool {
	s := fastStructOf(v.Type())
	if !s.ok {
		return false
	}
	d.pos++ // {
	var seen []bool
	if d.consume('}') {
		return true
	}
	for {
		key, ok := d.str()
		if !ok || !d.consume(':') {
			return false
		}
		if i, found := s.byName[key]; found {
			if seen == nil {
				seen = make([]bool, v.NumField())
			}
			if seen[i] {
				return false
			}
			seen[i] = true
			if !d.value(v.Field(i)) {
				return false
			}
		} else if s.known(key) || !d.skip() {
			return false
		}
		if d.consume('}') {
			return true
		}
		if !d.consume(',') {
			return false
		}
	}
}

func (d *fastDecoder) array(v reflect.Value) bool {
	d.pos++ // [
	// json.Unmarshal makes an empty array an empty slice, not nil.
	s := reflect.MakeSlice(v.Type(), 0, 0)
	if !d.consume(']') {
		for {
			s = reflect.Append(s, reflect.Zero(v.Type().Elem()))
			if !d.value(s.Index(s.Len() - 1)) {
				return false
			}
			if d.consume(']') {
				break
			}
			if !d.consume(',') {
				return false
			}
		}
	}
	v.Set(s)
	return true
}

func (d *fastDecoder) mapObject(v reflect.Value) bool {
	d.pos++ // {
	m := reflect.MakeMap(v.Type())
	if !d.consume('}') {
		for {
			key, ok := d.str()
			if !ok || !d.consume(':') {
				return false
			}
			e := reflect.New(v.Type().Elem()).Elem()
			if !d.value(e) {
				return false
			}
			// A key given twice: the last value wins, as in json.Unmarshal.
			m.SetMapIndex(reflect.ValueOf(key).Convert(v.Type().Key()), e)
			if d.consume('}') {
				break
			}
			if !d.consume(',') {
				return false
			}
		}
	}
	v.Set(m)
	return true
}

// skip passes over a value no field takes (the document is valid JSON).
func (d *fastDecoder) skip() bool {
	switch d.peek() {
	case '"':
		return d.skipStr()
	case '{', '[':
		depth := 0
		for d.pos < len(d.data) {
			switch d.data[d.pos] {
			case '"':
				if !d.skipStr() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					d.pos++
					return true
				}
			}
			d.pos++
		}
		return false
	default:
		for d.pos < len(d.data) && strings.IndexByte(",}] \t\n\r", d.data[d.pos]) < 0 {
			d.pos++
		}
		return true
	}
}

// skipStr passes over the next string without decoding it, so that a
// value no field takes costs no allocation (state.json's spec, which
// State, Stats and Wait leave undecoded, has a thousand strings). The
// document is valid JSON: the string ends at the first quote no backslash
// escapes. Its bytes need no UTF-8 check: json.Unmarshal, too, ignores
// what no field takes and hands a json.Unmarshaler its value as written.
func (d *fastDecoder) skipStr() bool {
	if d.peek() != '"' {
		return false
	}
	for d.pos++; d.pos < len(d.data); d.pos++ {
		switch d.data[d.pos] {
		case '\\':
			d.pos++
		case '"':
			d.pos++
			return true
		}
	}
	return false
}

// str decodes the next string as json.Unmarshal does, but reports false for
// one that is not valid UTF-8 (json.Unmarshal replaces each bad byte).
func (d *fastDecoder) str() (string, bool) {
	if d.peek() != '"' {
		return "", false
	}
	d.pos++
	start := d.pos
	for d.pos < len(d.data) {
		switch c := d.data[d.pos]; {
		case c == '"':
			raw := d.data[start:d.pos]
			d.pos++
			if !utf8.Valid(raw) {
				return "", false
			}
			return string(raw), true
		case c == '\\':
			return d.escaped(start)
		default:
			d.pos++
		}
	}
	return "", false
}

// escaped decodes a string with escapes, from start (after the quote).
func (d *fastDecoder) escaped(start int) (string, bool) {
	var b []byte
	i := start
	for i < len(d.data) {
		c := d.data[i]
		switch {
		case c == '"':
			d.pos = i + 1
			if !utf8.Valid(b) {
				return "", false
			}
			return string(b), true
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(d.data) {
			return "", false
		}
		switch e := d.data[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(d.data[i+2:])
			if !ok {
				return "", false
			}
			i += 6
			if utf16.IsSurrogate(r) {
				// A pair makes one rune; a lone half is U+FFFD.
				r2, ok2 := rune(-1), false
				if i+1 < len(d.data) && d.data[i] == '\\' && d.data[i+1] == 'u' {
					r2, ok2 = hex4(d.data[i+2:])
				}
				if dec := utf16.DecodeRune(r, r2); ok2 && dec != utf8.RuneError {
					i += 6
					r = dec
				} else {
					r = utf8.RuneError
				}
			}
			b = utf8.AppendRune(b, r)
			continue
		default:
			return "", false
		}
		i += 2
	}
	return "", false
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r*16 + rune(c)
	}
	return r, true
}
