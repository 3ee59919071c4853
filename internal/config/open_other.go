//go:build !unix

package config

import "os"

func openConfig(path string) (*os.File, error) { return os.Open(path) }
