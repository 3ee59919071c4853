//go:build !unix

package main

// raiseNoFile does nothing where the OS has no per-process open-file limit
// to raise.
func raiseNoFile() {}
