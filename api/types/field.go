package types

import (
	"fmt"
	"strconv"
	"strings"
)

// Path is the JSON path of a field, as users write it:
// spec.template.ports[1].port. Validation is not a hot path, so a path is
// simply its rendered form.
type Path struct{ s string }

// NewPath starts a path at a top-level field.
func NewPath(name string) Path { return Path{name} }

// Child is the path of a field of p.
func (p Path) Child(name string) Path {
	if p.s == "" {
		return Path{name}
	}
	return Path{p.s + "." + name}
}

// Index is the path of element i of the list at p.
func (p Path) Index(i int) Path { return Path{p.s + "[" + strconv.Itoa(i) + "]"} }

// Key is the path of the entry k of the map at p.
func (p Path) Key(k string) Path { return Path{p.s + "[" + strconv.Quote(k) + "]"} }

func (p Path) String() string { return p.s }

// FieldError is one field that breaks a rule.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Detail }

// FieldErrors is every error Validate found, in field order.
type FieldErrors []FieldError

func (l FieldErrors) Error() string {
	switch len(l) {
	case 0:
		return "no errors"
	case 1:
		return l[0].Error()
	}
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return fmt.Sprintf("%d errors: %s", len(l), strings.Join(msgs, "; "))
}

// Err returns l as an error, or nil when it is empty.
func (l FieldErrors) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// add records that the field at p breaks a rule.
func (l *FieldErrors) add(p Path, format string, args ...any) {
	*l = append(*l, FieldError{Field: p.String(), Detail: fmt.Sprintf(format, args...)})
}
