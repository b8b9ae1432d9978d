//! One module per kernel hook (see `tracer_common::hooks` for where each attaches). Each
//! entry point is a thin wrapper around a `try_` function; errors only mean "nothing to
//! report". The logic they share lives in `conn` and `helpers`.
mod connect_return;
mod fib6_table_lookup;
mod fib_table_lookup;
mod inet_sock_set_state;
mod kfree_skb;
mod sys_connect;
mod tcp_destroy_sock;
mod tcp_receive_reset;
mod tcp_retransmit_skb;
mod tcp_send_reset;
