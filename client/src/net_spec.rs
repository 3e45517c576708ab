//! `vmpriv tap --net SPEC`: one tap per `--net`, written the way QEMU users write a `-netdev`, as
//! comma-separated keys: `switch=br0,queues=4,vnet-hdr` or `local,vm=1,nic=0,inet6`. A comma inside a
//! value is doubled, as in QEMU (`description=a,,b` is `a,b`).
#![forbid(unsafe_code)]

use crate::TapOptions;

/// One tap as `--net` (or the single-tap options) describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSpec {
    /// `switch=NAME`.
    pub switch: Option<String>,
    /// `queues=N`, 1 to 8 (default 1).
    pub queues: u8,
    /// `vnet-hdr` (or `vnet_hdr`, `vnet_hdr=on`).
    pub vnet_hdr: bool,
    /// `local,vm=N,nic=N[,inet6]`: the local addresses of (vm, nic), and the IPv6 /96 too.
    pub local: Option<(u32, u32, bool)>,
    /// `description=TEXT`.
    pub description: Option<String>,
    /// `group=NAME`.
    pub group: Option<String>,
    /// `rdomain=N`.
    pub rdomain: Option<u32>,
}

impl NetSpec {
    /// What to ask the helper for.
    pub fn options(&self) -> TapOptions {
        let mut o = TapOptions::new().vnet_hdr(self.vnet_hdr).queues(self.queues);
        if let Some(s) = &self.switch {
            o = o.switch(s);
        }
        if let Some((vm, nic, inet6)) = self.local {
            o = o.local(vm, nic, inet6);
        }
        if let Some(d) = &self.description {
            o = o.description(d);
        }
        if let Some(g) = &self.group {
            o = o.group(g);
        }
        if let Some(r) = self.rdomain {
            o = o.rdomain(r);
        }
        o
    }
}

/// Splits at single commas; a doubled comma is a comma of the value.
fn split(spec: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            (',', Some(',')) => {
                chars.next();
                if let Some(last) = parts.last_mut() {
                    last.push(',');
                }
            }
            (',', _) => parts.push(String::new()),
            (c, _) => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    parts
}

fn number<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{key}={v}: not a number in range"))
}

fn on_off(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v {
        None | Some("on" | "yes" | "true") => Ok(true),
        Some("off" | "no" | "false") => Ok(false),
        Some(v) => Err(format!("{key}={v}: on or off")),
    }
}

/// Parses one `--net` value.
///
/// ```
/// let n = vmpriv_client::net_spec::parse("switch=br0,queues=2,vnet-hdr").unwrap();
/// assert_eq!((n.switch.as_deref(), n.queues, n.vnet_hdr), (Some("br0"), 2, true));
/// let n = vmpriv_client::net_spec::parse("local,vm=1,nic=0,inet6").unwrap();
/// assert_eq!(n.local, Some((1, 0, true)));
/// assert!(vmpriv_client::net_spec::parse("vm=1").is_err()); // vm= and nic= go with local
/// ```
pub fn parse(spec: &str) -> Result<NetSpec, String> {
    let mut n = NetSpec {
        queues: 1,
        ..NetSpec::default()
    };
    let (mut local, mut inet6, mut vm, mut nic) = (false, false, None, None);
    let mut seen: Vec<String> = Vec::new();
    for part in split(spec) {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v)),
            None => (part.clone(), None),
        };
        let key = key.replace('_', "-");
        if key.is_empty() {
            return Err(format!(
                "`{spec}`: an empty key (two commas in a row mean one comma)"
            ));
        }
        if seen.contains(&key) {
            return Err(format!("{key} given twice"));
        }
        seen.push(key.clone());
        let need = |v: Option<&str>| {
            v.map(str::to_owned)
                .ok_or_else(|| format!("{key} needs a value ({key}=...)"))
        };
        match key.as_str() {
            "switch" => n.switch = Some(need(value)?),
            "queues" => {
                n.queues = number(&key, &need(value)?)?;
                if !(1..=8).contains(&n.queues) {
                    return Err(format!("queues={}: 1 to 8", n.queues));
                }
            }
            "vnet-hdr" => n.vnet_hdr = on_off(&key, value)?,
            "local" => local = on_off(&key, value)?,
            "inet6" => inet6 = on_off(&key, value)?,
            "vm" => vm = Some(number::<u32>(&key, &need(value)?)?),
            "nic" => nic = Some(number::<u32>(&key, &need(value)?)?),
            "description" => n.description = Some(need(value)?),
            "group" => n.group = Some(need(value)?),
            "rdomain" => n.rdomain = Some(number(&key, &need(value)?)?),
            _ => {
                return Err(format!(
                    "unknown key `{key}` (keys: switch=, queues=, vnet-hdr, local, vm=, nic=, inet6, \
                     description=, group=, rdomain=)"
                ));
            }
        }
    }
    match (local, vm, nic) {
        (true, Some(vm), Some(nic)) => n.local = Some((vm, nic, inet6)),
        (false, None, None) if !inet6 => {}
        (true, _, _) => return Err("local needs vm=N and nic=N".to_owned()),
        _ => return Err("vm=, nic= and inet6 go with local (local,vm=N,nic=N)".to_owned()),
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_style_keys_parse() {
        let n = parse("switch=br0,queues=4,vnet_hdr=on,description=vm1,,eth0,group=vms").unwrap();
        assert_eq!(n.switch.as_deref(), Some("br0"));
        assert_eq!(n.queues, 4);
        assert!(n.vnet_hdr);
        assert_eq!(n.description.as_deref(), Some("vm1,eth0"));
        assert_eq!(n.group.as_deref(), Some("vms"));
        let n = parse("local,vm=2,nic=1,rdomain=5").unwrap();
        assert_eq!(
            (n.local, n.rdomain, n.switch),
            (Some((2, 1, false)), Some(5), None)
        );
        assert_eq!(
            parse("").unwrap_err(),
            "``: an empty key (two commas in a row mean one comma)"
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (spec, why) in [
            ("switch", "switch needs a value"),
            ("queues=9", "1 to 8"),
            ("queues=x", "not a number"),
            ("switch=a,switch=b", "given twice"),
            ("bridge=br0", "unknown key `bridge`"),
            ("local,vm=1", "local needs vm=N and nic=N"),
            ("vm=1,nic=0", "go with local"),
            ("inet6", "go with local"),
            ("vnet-hdr=maybe", "on or off"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }
}
