//! A minimal TLS 1.2 ClientHello carrying an SNI: enough for Envoy's
//! `tls_inspector` to read `requested_server_name`, so SNI-based filters are
//! tested without a TLS stack. No handshake follows.

/// The bytes of one TLS record holding a ClientHello for `server_name`.
pub fn client_hello(server_name: &str) -> Vec<u8> {
    let name = server_name.as_bytes();
    let mut server_name_list = Vec::new();
    server_name_list.push(0); // host_name
    push_u16_prefixed(&mut server_name_list, name);
    let mut sni_extension = Vec::new();
    push_u16_prefixed(&mut sni_extension, &server_name_list);

    let mut extensions = Vec::new();
    extensions.extend_from_slice(&0u16.to_be_bytes()); // server_name
    push_u16_prefixed(&mut extensions, &sni_extension);

    let mut hello = Vec::new();
    hello.extend_from_slice(&[0x03, 0x03]); // TLS 1.2
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // no session id
    push_u16_prefixed(&mut hello, &[0xc0, 0x2f, 0x00, 0x9c]); // two cipher suites
    hello.extend_from_slice(&[1, 0]); // null compression
    push_u16_prefixed(&mut hello, &extensions);

    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);

    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 framing
    push_u16_prefixed(&mut record, &handshake);
    record
}

fn push_u16_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}
