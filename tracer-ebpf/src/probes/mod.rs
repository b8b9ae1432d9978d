//! One module per kernel hook. Each entry point is a thin wrapper around a `try_` function
//! that returns `Result<u32, i64>`; errors only mean "nothing to report".
mod inet_sock_set_state;
mod sys_enter_connect;
mod sys_exit_connect;
mod tcp_connect;
mod tcp_receive_reset;
mod tcp_retransmit_skb;
mod tcp_send_reset;
