{
  "targets": [
    {
      "target_name": "vhost_user_native",
      "sources": [
        "native/addon.cc",
        "native/memory.cc",
        "native/eventfd.cc",
        "native/socket.cc",
        "native/poll.cc",
        "native/turn.cc",
        "native/clock.cc",
        "native/uv_group.cc",
        "native/util.cc",
        "native/fds.cc"
      ],
      "cflags": ["-Wall", "-Wextra", "-O2", "-fstack-protector-strong", "-D_FORTIFY_SOURCE=2"],
      "cflags_cc": ["-Wall", "-Wextra", "-O2", "-fstack-protector-strong"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
