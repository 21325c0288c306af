#!/usr/bin/env python3
"""Tiny socket probes for scripts/netns-nat-test.sh (run inside network namespaces).

  whoami-udp PORT SECONDS              answer each datagram with the sender's ip:port
  whoami-tcp PORT SECONDS              answer each connection with the peer's ip:port
  ask-udp SRCPORT HOST:PORT...         from one local UDP port, ask each whoami; print the answers
  ask-tcp SRCPORT HOST:PORT...         the same over TCP (one connection each, same source port)
  listen-udp PORT SECONDS              print "got FROM" for each datagram, "none" if nothing came
  listen-tcp PORT SECONDS              print "accepted FROM" for each connection, "none" if none came
  send-udp SRCPORT HOST:PORT           send one datagram from SRCPORT
  open-udp SRCPORT HOST:PORT SECONDS   send to HOST:PORT from SRCPORT (opening a NAT mapping),
                                       then print "got FROM" for each datagram, "none" if none
  connect-tcp HOST:PORT SECONDS        print "connected" or "failed: REASON"

Exit code 0 unless the arguments are wrong; the caller judges the printed lines.
"""
import socket
import sys
import time


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def whoami_udp(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    end = time.time() + seconds
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            _, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        s.sendto(f"{addr[0]}:{addr[1]}".encode(), addr)


def whoami_tcp(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    end = time.time() + seconds
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            c, addr = s.accept()
        except socket.timeout:
            continue
        c.sendall(f"{addr[0]}:{addr[1]}".encode())
        c.close()


def ask_udp(srcport, targets):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", srcport))
    s.settimeout(1.0)
    for t in targets:
        answer = "no-answer"
        for _ in range(3):
            s.sendto(b"?", hostport(t))
            try:
                data, _ = s.recvfrom(2048)
                answer = data.decode()
                break
            except socket.timeout:
                pass
        print(answer)


def ask_tcp(srcport, targets):
    for t in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("0.0.0.0", srcport))
        s.settimeout(2.0)
        try:
            s.connect(hostport(t))
            print(s.recv(256).decode() or "no-answer")
        except OSError as e:
            print(f"failed: {e}")
        finally:
            s.close()


def listen_udp(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    end = time.time() + seconds
    got = False
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            _, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        print(f"got {addr[0]}:{addr[1]}", flush=True)
        got = True
    if not got:
        print("none")


def listen_tcp(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    end = time.time() + seconds
    got = False
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            c, addr = s.accept()
        except socket.timeout:
            continue
        print(f"accepted {addr[0]}:{addr[1]}", flush=True)
        got = True
        c.close()
    if not got:
        print("none")


def send_udp(srcport, target):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", srcport))
    for _ in range(3):
        s.sendto(b"hello", hostport(target))
        time.sleep(0.05)


def open_udp(srcport, target, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", srcport))
    s.sendto(b"open", hostport(target))
    print("open", flush=True)
    end = time.time() + seconds
    got = False
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            _, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        print(f"got {addr[0]}:{addr[1]}", flush=True)
        got = True
    if not got:
        print("none")


def connect_tcp(target, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(seconds)
    try:
        s.connect(hostport(target))
        print("connected")
    except OSError as e:
        print(f"failed: {e.__class__.__name__}: {e}")
    finally:
        s.close()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "whoami-udp":
        whoami_udp(int(args[0]), float(args[1]))
    elif cmd == "whoami-tcp":
        whoami_tcp(int(args[0]), float(args[1]))
    elif cmd == "ask-udp":
        ask_udp(int(args[0]), args[1:])
    elif cmd == "ask-tcp":
        ask_tcp(int(args[0]), args[1:])
    elif cmd == "listen-udp":
        listen_udp(int(args[0]), float(args[1]))
    elif cmd == "listen-tcp":
        listen_tcp(int(args[0]), float(args[1]))
    elif cmd == "send-udp":
        send_udp(int(args[0]), args[1])
    elif cmd == "open-udp":
        open_udp(int(args[0]), args[1], float(args[2]))
    elif cmd == "connect-tcp":
        connect_tcp(args[0], float(args[1]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
