package types

// EventType is what happened to an object, as a watch reports it (the
// "type" of each line of a watch stream).
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	// Bookmark carries no change: its object has only a resourceVersion,
	// the revision the watch has seen up to, from which it can resume
	// without replaying what came before.
	Bookmark EventType = "BOOKMARK"
)

// Event is one change of an object. For Deleted the object is its last
// state, with the resourceVersion of its deletion.
type Event struct {
	Type   EventType
	Object Object
}
