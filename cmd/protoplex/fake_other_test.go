//go:build !linux

package main

func fakeNewBinary() bool { return false }
