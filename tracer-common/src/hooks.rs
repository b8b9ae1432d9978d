//! Every program of the eBPF object and the kernel hook it attaches to, in one table that
//! the loader attaches from and a test checks against the object itself: a program renamed
//! on one side only fails the unit tier, not a user's start-up.

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A raw tracepoint (its `TP_PROTO` arguments, no record copied), by name.
    RawTracepoint(&'static str),
    /// A tracepoint through tracefs: `(category, name)`.
    Tracepoint(&'static str, &'static str),
    /// fexit on a kernel function.
    FExit(&'static str),
    /// kprobe on a kernel function.
    KProbe(&'static str),
    /// kretprobe on a kernel function.
    KRetProbe(&'static str),
}

/// When a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// On every run.
    Always,
    /// With this [`crate::connect_hook`].
    ConnectHook(u8),
}

/// One program and its hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The program's name in the object (its function name in tracer-ebpf).
    pub program: &'static str,
    pub attach: Attach,
    pub when: When,
}

/// The kernel function whose return is connect()'s result, for the socket and address
/// it was given (also what io_uring's connect calls).
pub const CONNECT_FUNCTION: &str = "__sys_connect_file";

pub const INET_SOCK_SET_STATE: Hook = Hook {
    program: "inet_sock_set_state",
    attach: Attach::RawTracepoint("inet_sock_set_state"),
    when: When::Always,
};
pub const TCP_RETRANSMIT_SKB: Hook = Hook {
    program: "tcp_retransmit_skb",
    attach: Attach::RawTracepoint("tcp_retransmit_skb"),
    when: When::Always,
};
pub const TCP_RECEIVE_RESET: Hook = Hook {
    program: "tcp_receive_reset",
    attach: Attach::RawTracepoint("tcp_receive_reset"),
    when: When::Always,
};
pub const TCP_SEND_RESET: Hook = Hook {
    program: "tcp_send_reset",
    attach: Attach::RawTracepoint("tcp_send_reset"),
    when: When::Always,
};
pub const TCP_DESTROY_SOCK: Hook = Hook {
    program: "tcp_destroy_sock",
    attach: Attach::RawTracepoint("tcp_destroy_sock"),
    when: When::Always,
};
pub const KFREE_SKB: Hook = Hook {
    program: "kfree_skb",
    attach: Attach::RawTracepoint("kfree_skb"),
    when: When::Always,
};
pub const FIB_TABLE_LOOKUP: Hook = Hook {
    program: "fib_table_lookup",
    attach: Attach::RawTracepoint("fib_table_lookup"),
    when: When::ConnectHook(crate::connect_hook::NONE),
};
pub const FIB6_TABLE_LOOKUP: Hook = Hook {
    program: "fib6_table_lookup",
    attach: Attach::RawTracepoint("fib6_table_lookup"),
    when: When::ConnectHook(crate::connect_hook::NONE),
};
pub const CONNECT_FEXIT: Hook = Hook {
    program: "connect_fexit",
    attach: Attach::FExit(CONNECT_FUNCTION),
    when: When::ConnectHook(crate::connect_hook::FEXIT),
};
pub const CONNECT_KPROBE: Hook = Hook {
    program: "connect_kprobe",
    attach: Attach::KProbe(CONNECT_FUNCTION),
    when: When::ConnectHook(crate::connect_hook::KRETPROBE),
};
pub const CONNECT_KRETPROBE: Hook = Hook {
    program: "connect_kretprobe",
    attach: Attach::KRetProbe(CONNECT_FUNCTION),
    when: When::ConnectHook(crate::connect_hook::KRETPROBE),
};
pub const SYS_ENTER_CONNECT: Hook = Hook {
    program: "sys_enter_connect",
    attach: Attach::Tracepoint("syscalls", "sys_enter_connect"),
    when: When::ConnectHook(crate::connect_hook::SYSCALLS),
};
pub const SYS_EXIT_CONNECT: Hook = Hook {
    program: "sys_exit_connect",
    attach: Attach::Tracepoint("syscalls", "sys_exit_connect"),
    when: When::ConnectHook(crate::connect_hook::SYSCALLS),
};

/// Every program, in the order they are attached: the connect() hooks last, once the
/// state machine they defer to is in place.
pub const ALL: [Hook; 13] = [
    INET_SOCK_SET_STATE,
    TCP_RETRANSMIT_SKB,
    TCP_RECEIVE_RESET,
    TCP_SEND_RESET,
    TCP_DESTROY_SOCK,
    KFREE_SKB,
    FIB_TABLE_LOOKUP,
    FIB6_TABLE_LOOKUP,
    CONNECT_FEXIT,
    CONNECT_KPROBE,
    CONNECT_KRETPROBE,
    SYS_ENTER_CONNECT,
    SYS_EXIT_CONNECT,
];
