package ilist

import (
	"slices"
	"testing"
)

type item struct {
	v     int
	links Links[item]
}

func linksOf(i *item) *Links[item] { return &i.links }

func values(l *List[item]) []int {
	var out []int
	for e := l.Front(); e != nil; e = l.Next(e) {
		out = append(out, e.v)
	}
	return out
}

func TestList(t *testing.T) {
	l := New(linksOf)
	if l.Front() != nil || l.Back() != nil {
		t.Fatal("new list not empty")
	}
	a, b, c, d := &item{v: 1}, &item{v: 2}, &item{v: 3}, &item{v: 4}
	l.PushBack(b)
	l.PushFront(a)
	l.PushBack(c)
	l.PushBack(d)
	if got := values(&l); !slices.Equal(got, []int{1, 2, 3, 4}) || l.Back() != d {
		t.Fatalf("after pushes: %v", got)
	}
	l.Remove(c) // middle
	l.Remove(a) // front
	l.Remove(d) // back
	if got := values(&l); !slices.Equal(got, []int{2}) || l.Front() != b || l.Back() != b {
		t.Fatalf("after removes: %v", got)
	}
	l.Remove(b)
	if l.Front() != nil || l.Back() != nil || b.links != (Links[item]{}) {
		t.Fatal("list not empty, or a removed element kept its links")
	}
	l.PushFront(c) // a removed element can be pushed again
	if got := values(&l); !slices.Equal(got, []int{3}) {
		t.Fatalf("re-push: %v", got)
	}
}

func BenchmarkMoveToFront(b *testing.B) {
	l := New(linksOf)
	items := make([]item, 1024)
	for i := range items {
		l.PushBack(&items[i])
	}
	b.ReportAllocs()
	for i := range b.N {
		e := &items[i%len(items)]
		l.Remove(e)
		l.PushFront(e)
	}
}
