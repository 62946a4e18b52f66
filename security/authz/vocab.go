package authz

import (
	"fmt"
	"strings"
)

// Verbs of the API. VerbAll in a rule stands for every one of them.
const (
	VerbGet    = "get"
	VerbList   = "list"
	VerbWatch  = "watch"
	VerbCreate = "create"
	VerbUpdate = "update"
	VerbPatch  = "patch"
	VerbDelete = "delete"
	VerbAll    = "*"
)

// ResourceAll in a rule stands for every resource and subresource;
// "<resource>/*" for every subresource of one resource (not the resource
// itself).
const ResourceAll = "*"

var verbs = []string{VerbGet, VerbList, VerbWatch, VerbCreate, VerbUpdate, VerbPatch, VerbDelete}

// resourceInfo is one resource of the API and its subresources.
type resourceInfo struct {
	name         string
	namespaced   bool
	subresources []string
}

// vocabulary is the closed set of resources the API serves. Rules naming
// anything else are refused by validation; requests for anything else are
// denied.
var vocabulary = []resourceInfo{
	{name: "workloads", namespaced: true, subresources: []string{"status", "scale"}},
	{name: "instances", namespaced: true, subresources: []string{"status", "log", "exec"}},
	{name: "services", namespaced: true, subresources: []string{"status"}},
	{name: "networkpolicies", namespaced: true},
	{name: "secrets", namespaced: true},
	{name: "serviceaccounts", namespaced: true, subresources: []string{"token"}},
	{name: "roles", namespaced: true},
	{name: "rolebindings", namespaced: true},
	{name: "endpoints", namespaced: true},
	{name: "events", namespaced: true},
	{name: "namespaces", subresources: []string{"status"}},
	{name: "nodes", subresources: []string{"status", "certificate", "heartbeat"}},
	{name: "servers", subresources: []string{"status"}},
	{name: "clusterroles"},
	{name: "clusterrolebindings"},
}

// resKey names a resource or subresource (sub empty for the resource).
type resKey struct{ res, sub string }

func (k resKey) String() string {
	if k.sub == "" {
		return k.res
	}
	return k.res + "/" + k.sub
}

// resources numbers every resource and subresource, in vocabulary order,
// so a rule's resources compile to a bit set.
var (
	resources     []resKey
	resourceIndex = map[resKey]int{}
	namespacedBit uint32 // bits of namespaced resources and their subresources
	subBits       = map[string]uint32{}
	allResources  uint32
)

func init() {
	for _, r := range vocabulary {
		keys := []resKey{{res: r.name}}
		for _, s := range r.subresources {
			keys = append(keys, resKey{r.name, s})
		}
		for i, k := range keys {
			bit := uint32(1) << len(resources)
			resourceIndex[k] = len(resources)
			resources = append(resources, k)
			allResources |= bit
			if r.namespaced {
				namespacedBit |= bit
			}
			if i > 0 {
				subBits[r.name] |= bit
			}
		}
	}
	if len(resources) > 32 {
		panic("authz: more resources than bits in a rule's resource set")
	}
}

func verbBit(v string) uint8 {
	for i, known := range verbs {
		if v == known {
			return 1 << i
		}
	}
	return 0
}

const allVerbs = uint8(1)<<7 - 1

// parseRuleResource maps a rule's resource entry to its bit set; ok is
// false for anything outside the vocabulary.
func parseRuleResource(s string) (bits uint32, ok bool) {
	if s == ResourceAll {
		return allResources, true
	}
	res, sub, hasSub := strings.Cut(s, "/")
	if hasSub && sub == ResourceAll {
		b, ok := subBits[res]
		return b, ok
	}
	i, ok := resourceIndex[resKey{res, sub}]
	if !ok || (hasSub && sub == "") {
		return 0, false
	}
	return 1 << i, true
}

// Namespaced reports whether resource (a plural name like "secrets", or
// "resource/sub") lives in a namespace, and whether it is known at all.
func Namespaced(resource string) (namespaced, known bool) {
	res, sub, _ := strings.Cut(resource, "/")
	i, ok := resourceIndex[resKey{res, sub}]
	if !ok {
		return false, false
	}
	return namespacedBit&(1<<i) != 0, true
}

// FieldError is a problem with one field of a role or binding. Field is the
// path of the field, such as "rules[0].verbs[2]".
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

func knownResourceList(namespacedOnly bool) string {
	var names []string
	for _, r := range vocabulary {
		if namespacedOnly && !r.namespaced {
			continue
		}
		names = append(names, r.name)
	}
	return strings.Join(names, ", ")
}
