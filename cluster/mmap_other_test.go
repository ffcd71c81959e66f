//go:build !unix

package cluster

import (
	"errors"
	"os"
)

func mmapFile(*os.File, int) ([]byte, error) { return nil, errors.New("not supported") }

func munmapFile([]byte) {}
