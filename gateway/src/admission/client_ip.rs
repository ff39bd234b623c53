//! Who the client is: the TCP peer, unless the peer is a trusted proxy, in which case
//! `X-Forwarded-For` is walked right to left past trusted hops.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// The client address for admission and pinning.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().parse::<IpAddr>())
        .collect::<Result<_, _>>()
        .unwrap_or_default(); // a malformed header is not believed at all
    for hop in hops.iter().rev() {
        if !is_trusted(hop) {
            return *hop;
        }
    }
    hops.first().copied().unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &headers(&["1.2.3.4"]), &trusted()), peer);
    }

    #[test]
    fn trusted_peer_yields_the_last_untrusted_hop() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.2.2.2"]);
        assert_eq!(
            client_ip(peer, &h, &trusted()),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn malformed_forwarded_for_falls_back_to_the_peer() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &headers(&["not-an-ip, 1.2.3.4"]), &trusted()),
            peer
        );
    }

    #[test]
    fn trusted_peer_without_forwarded_for_is_the_client() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted()), peer);
    }
}
