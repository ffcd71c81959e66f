package inflight

import (
	"net"
	"runtime"
	"testing"
	"time"
)

// The receive queue read from /proc/net/tcp is what a server that does not
// read leaves in its socket.
func TestReceiveQueue(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/net/tcp")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted // never read
	defer server.Close()
	if _, err := client.Write(make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := receiveQueue(server.LocalAddr().String(), client.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		if n == 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("receive queue %d, want 1000", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The client's end has read nothing either and was sent nothing.
	if n, err := receiveQueue(client.LocalAddr().String(), server.LocalAddr().String()); err != nil || n != 0 {
		t.Fatalf("client's receive queue: %d, %v", n, err)
	}
	if _, err := receiveQueue(server.LocalAddr().String(), "127.0.0.1:1"); err == nil {
		t.Fatal("found a socket that does not exist")
	}
}
