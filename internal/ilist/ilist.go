// Package ilist is an intrusive doubly linked list: each element carries its
// own links, so adding one costs no allocation and moving or removing one is
// O(1). The guard keeps its idle sources in recency order with it, the UDP
// engine its flows per idle timeout.
package ilist

// Links is an element's place in one List; embed it in the element type.
type Links[T any] struct{ prev, next *T }

// List is a list of *T whose links are found by the function given to New.
// An element is in at most one List through one Links at a time.
type List[T any] struct {
	head, tail *T
	links      func(*T) *Links[T]
}

// New returns an empty list; links returns an element's Links.
func New[T any](links func(*T) *Links[T]) List[T] { return List[T]{links: links} }

// Front returns the first element, or nil.
func (l *List[T]) Front() *T { return l.head }

// Back returns the last element, or nil.
func (l *List[T]) Back() *T { return l.tail }

// Next returns the element after e, or nil.
func (l *List[T]) Next(e *T) *T { return l.links(e).next }

// PushFront inserts e, which must not be in a list, first.
func (l *List[T]) PushFront(e *T) {
	le := l.links(e)
	le.prev, le.next = nil, l.head
	if l.head != nil {
		l.links(l.head).prev = e
	} else {
		l.tail = e
	}
	l.head = e
}

// PushBack inserts e, which must not be in a list, last.
func (l *List[T]) PushBack(e *T) {
	le := l.links(e)
	le.prev, le.next = l.tail, nil
	if l.tail != nil {
		l.links(l.tail).next = e
	} else {
		l.head = e
	}
	l.tail = e
}

// Remove takes e, which must be in l, out of it.
func (l *List[T]) Remove(e *T) {
	le := l.links(e)
	if le.prev != nil {
		l.links(le.prev).next = le.next
	} else {
		l.head = le.next
	}
	if le.next != nil {
		l.links(le.next).prev = le.prev
	} else {
		l.tail = le.prev
	}
	le.prev, le.next = nil, nil
}
