package types

import (
	"regexp"
	"strings"
	"time"
)

// APIVersion is the version of every resource in this package.
const APIVersion = "v1"

// TypeMeta says what an object is. Every object has it inline, so its JSON
// starts with apiVersion and kind.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// ObjectMeta is the metadata every object has.
type ObjectMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	// Labels are what selectors (services, placement, list -l) match.
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// UID is set once at creation and never changes: a deleted and
	// re-created object of the same name has another.
	UID string `json:"uid,omitempty"`
	// ResourceVersion is the store revision that last changed the object.
	// An update or delete that names one succeeds only if it is still
	// current (optimistic concurrency).
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Generation counts changes of the spec; status.observedGeneration
	// says which generation the status reflects.
	Generation        int64     `json:"generation,omitempty"`
	CreationTimestamp time.Time `json:"creationTimestamp,omitzero"`
	// OwnerReferences name the object this one was made for (an instance's
	// workload); deleting the owner deletes what it owns.
	OwnerReferences []OwnerReference `json:"ownerReferences,omitempty"`
}

// OwnerReference points at the object that owns another.
type OwnerReference struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	UID  string `json:"uid"`
	// Controller is true for the one owner that manages the object.
	Controller bool `json:"controller,omitempty"`
}

// GetObjectMeta returns the object's metadata; every resource type has it through
// its embedded ObjectMeta.
func (m *ObjectMeta) GetObjectMeta() *ObjectMeta { return m }

// GetTypeMeta returns the object's apiVersion and kind.
func (t *TypeMeta) GetTypeMeta() *TypeMeta { return t }

// ListMeta is the metadata of a list: the revision it was read at and, when
// it was cut short by a limit, the token that continues it.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty"`
	Continue        string `json:"continue,omitempty"`
	// RemainingItemCount is how many objects the rest of the list holds,
	// when known.
	RemainingItemCount *int64 `json:"remainingItemCount,omitempty"`
}

// Condition is one aspect of an object's state, as Kubernetes reports it.
type Condition struct {
	Type               string          `json:"type"`
	Status             ConditionStatus `json:"status"`
	Reason             string          `json:"reason,omitempty"`
	Message            string          `json:"message,omitempty"`
	LastTransitionTime time.Time       `json:"lastTransitionTime,omitzero"`
}

// ConditionStatus is True, False or Unknown.
type ConditionStatus string

const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// FindCondition returns the condition of type t, or nil.
func FindCondition(conds []Condition, t string) *Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

// SetCondition sets c in conds, keeping LastTransitionTime when the status
// did not change, and reports whether anything changed.
func SetCondition(conds *[]Condition, c Condition) bool {
	if old := FindCondition(*conds, c.Type); old != nil {
		if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
			return false
		}
		if old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		}
		*old = c
		return true
	}
	*conds = append(*conds, c)
	return true
}

const (
	maxNameLength       = 63
	maxAnnotationsBytes = 256 << 10
	maxLabelValueLength = 63
	maxLabelNameLength  = 63
	maxLabelPrefix      = 253
)

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelName        = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// ValidateName checks a name against the DNS-1123 label rules every object
// name and namespace follows: at most 63 lower-case letters, digits and '-',
// starting and ending with a letter or digit. It returns what is wrong, or "".
func ValidateName(name string) string {
	switch {
	case name == "":
		return "must not be empty"
	case len(name) > maxNameLength:
		return "must be at most 63 characters (DNS-1123 label)"
	case !dns1123Label.MatchString(name):
		return "must be lower-case letters, digits and '-', starting and ending with a letter or digit (DNS-1123 label), e.g. \"web-1\""
	}
	return ""
}

// validateLabelKey checks a label or annotation key: an optional DNS
// subdomain prefix and '/', then a name of at most 63 characters.
func validateLabelKey(k string) string {
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if prefix == "" || len(prefix) > maxLabelPrefix || !dns1123Subdomain.MatchString(prefix) {
			return "the prefix before '/' must be a DNS subdomain (lower-case, at most 253 characters), e.g. \"example.com/tier\""
		}
	}
	switch {
	case name == "":
		return "must not be empty"
	case len(name) > maxLabelNameLength:
		return "the name part must be at most 63 characters"
	case !labelName.MatchString(name):
		return "must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	}
	return ""
}

// validateLabelValue checks a label value: empty, or at most 63 letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit.
func validateLabelValue(v string) string {
	switch {
	case v == "":
		return ""
	case len(v) > maxLabelValueLength:
		return "must be at most 63 characters"
	case !labelName.MatchString(v):
		return "must be empty or letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
	}
	return ""
}

func validateLabels(labels map[string]string, p Path, errs *FieldErrors) {
	for _, k := range sortedKeys(labels) {
		if msg := validateLabelKey(k); msg != "" {
			errs.add(p.Key(k), "label key %s", msg)
		}
		if msg := validateLabelValue(labels[k]); msg != "" {
			errs.add(p.Key(k), "label value %q %s", labels[k], msg)
		}
	}
}

func (m *ObjectMeta) validate(namespaced bool, p Path, errs *FieldErrors) {
	if msg := ValidateName(m.Name); msg != "" {
		errs.add(p.Child("name"), "%s", msg)
	}
	switch {
	case namespaced && m.Namespace == "":
		errs.add(p.Child("namespace"), "must be set for a namespaced resource")
	case namespaced:
		if msg := ValidateName(m.Namespace); msg != "" {
			errs.add(p.Child("namespace"), "%s", msg)
		}
	case m.Namespace != "":
		errs.add(p.Child("namespace"), "must be empty: this resource is not namespaced")
	}
	validateLabels(m.Labels, p.Child("labels"), errs)
	size := 0
	for _, k := range sortedKeys(m.Annotations) {
		if msg := validateLabelKey(k); msg != "" {
			errs.add(p.Child("annotations").Key(k), "annotation key %s", msg)
		}
		size += len(k) + len(m.Annotations[k])
	}
	if size > maxAnnotationsBytes {
		errs.add(p.Child("annotations"), "must be at most 256 KiB in all, not %d bytes", size)
	}
	if m.Generation < 0 {
		errs.add(p.Child("generation"), "must not be negative")
	}
}
