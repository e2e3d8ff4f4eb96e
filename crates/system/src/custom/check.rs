//! The `[custom]` table's checks: each names the first bad field, as
//! `custom.<field>` once the configuration adds the table's name.

use super::{HostSpec, Params, VmSpec, endpoint};
use crate::config::{Check, check_interrupts};

/// An endpoint of the multi-host form: `hN.vmM`, host N's M-th VM.
pub(super) fn host_endpoint(s: &str) -> Option<(usize, usize)> {
    let (h, v) = s.strip_prefix('h')?.split_once('.')?;
    Some((h.parse().ok()?, v.strip_prefix("vm")?.parse().ok()?))
}

/// VMs, each named by `name(i)` in messages, whose errors blame `field`.
fn check_vms(
    vms: &[VmSpec],
    batch: u32,
    field: &'static str,
    name: &dyn Fn(usize) -> String,
) -> Check {
    for (i, vm) in vms.iter().enumerate() {
        if !(2..=64).contains(&vm.memory_mib) {
            return Err((
                field,
                format!("{}: memory_mib {} is not in 2..=64", name(i), vm.memory_mib),
            ));
        }
        let n = vm.rx_descriptors;
        if !(8..=256).contains(&n) || n % 8 != 0 {
            return Err((
                field,
                format!(
                    "{}: rx_descriptors {n} is not a multiple of 8 in 8..=256",
                    name(i)
                ),
            ));
        }
        if batch >= u32::from(n) {
            return Err((
                "batch",
                format!("{batch} does not fit {}'s {n} receive descriptors", name(i)),
            ));
        }
    }
    Ok(())
}

/// The multi-host form's hosts: exactly two (one cable joins two physical
/// NICs; more would need a switch between them), each with 1 to 15 VMs,
/// and no VMs outside them.
fn check_hosts(params: &Params, hosts: &[HostSpec]) -> Check {
    if !params.vms.is_empty() {
        return Err((
            "vms",
            "with `[[custom.hosts]]`, give each host's VMs as `[[custom.hosts.vms]]`; \
             `[[custom.vms]]` is the single-host form"
                .to_owned(),
        ));
    }
    match hosts.len() {
        2 => {}
        0 => return Err(("hosts", "no hosts: give two `[[custom.hosts]]`".to_owned())),
        1 => {
            return Err((
                "hosts",
                "1 host: the multi-host form joins two hosts by a cable \
                 (for one host, give `[[custom.vms]]` and no `[[custom.hosts]]`)"
                    .to_owned(),
            ));
        }
        n => {
            return Err((
                "hosts",
                format!(
                    "{n} hosts: at most 2 (a cable joins two physical NICs; \
                     there is no switch between hosts)"
                ),
            ));
        }
    }
    for (h, host) in hosts.iter().enumerate() {
        if host.vms.is_empty() || host.vms.len() > 15 {
            return Err((
                "hosts.vms",
                format!(
                    "h{h} has {} VMs: give 1 to 15 `[[custom.hosts.vms]]`",
                    host.vms.len()
                ),
            ));
        }
        check_vms(&host.vms, params.batch, "hosts.vms", &|i| {
            format!("h{h}.vm{i}")
        })?;
    }
    Ok(())
}

/// One endpoint of flow `i` in the multi-host form: a VM that exists.
fn check_host_endpoint(
    i: usize,
    end: &str,
    hosts: &[HostSpec],
) -> Result<(usize, usize), (&'static str, String)> {
    if end == "wire" || end.ends_with(".wire") {
        return Err((
            "flows",
            format!(
                "flow {i}: `{end}`: with `[[custom.hosts]]` the physical NICs are cabled to each \
                 other and there is no peer on the wire; give `hN.vmM`"
            ),
        ));
    }
    let Some((h, v)) = host_endpoint(end) else {
        return Err(("flows", format!("flow {i}: `{end}` is not `hN.vmM`")));
    };
    let Some(host) = hosts.get(h) else {
        return Err((
            "flows",
            format!(
                "flow {i}: `{end}`: there is no host h{h} ({} hosts)",
                hosts.len()
            ),
        ));
    };
    if v >= host.vms.len() {
        return Err((
            "flows",
            format!("flow {i}: `{end}`: h{h} has {} VMs", host.vms.len()),
        ));
    }
    Ok((h, v))
}

impl Params {
    /// Checks the values, naming the first bad field.
    pub fn validate(&self) -> Check {
        match &self.hosts {
            None => {
                if self.vms.is_empty() || self.vms.len() > 15 {
                    return Err(("vms", "give 1 to 15 VMs".to_owned()));
                }
                check_vms(&self.vms, self.batch, "vms", &|i| format!("vm{i}"))?;
            }
            Some(hosts) => check_hosts(self, hosts)?,
        }
        check_interrupts(self.irq_latency_ns, 0)?;
        if self.batch == 0 {
            return Err(("batch", "0 frames between receive passes".to_owned()));
        }
        let frames = |n: u64| (1024..=1 << 20).contains(&n);
        if !frames(self.data_frames) {
            return Err((
                "data_frames",
                format!("{} is not in 1024..=1048576", self.data_frames),
            ));
        }
        for (h, host) in self.hosts.iter().flatten().enumerate() {
            if !frames(host.data_frames) {
                return Err((
                    "hosts.data_frames",
                    format!("h{h}: {} is not in 1024..=1048576", host.data_frames),
                ));
            }
        }
        if self.flows.is_empty() || self.flows.len() > 32 {
            return Err(("flows", "give 1 to 32 flows".to_owned()));
        }
        for (i, f) in self.flows.iter().enumerate() {
            let same = match &self.hosts {
                None => {
                    for end in [&f.from, &f.to] {
                        match endpoint(end) {
                            Some(Some(v)) if v >= self.vms.len() => {
                                return Err((
                                    "flows",
                                    format!("flow {i}: `{end}`: there are {} VMs", self.vms.len()),
                                ));
                            }
                            None => {
                                return Err((
                                    "flows",
                                    format!("flow {i}: `{end}` is not `wire` or `vmN`"),
                                ));
                            }
                            _ => {}
                        }
                    }
                    f.from == f.to
                }
                Some(hosts) => {
                    check_host_endpoint(i, &f.from, hosts)? == check_host_endpoint(i, &f.to, hosts)?
                }
            };
            if same {
                return Err((
                    "flows",
                    format!("flow {i}: from and to are both `{}`", f.from),
                ));
            }
            if !(60..=1514).contains(&f.len) {
                return Err((
                    "flows",
                    format!("flow {i}: len {} is not in 60..=1514", f.len),
                ));
            }
            if f.frames == 0 || f.frames > 1_000_000 {
                return Err((
                    "flows",
                    format!("flow {i}: frames {} is not in 1..=1000000", f.frames),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iovirt_vmm::{DemuxMode, VmToVm};

    use super::super::{HostSpec, Params, VmSpec};
    use crate::config::{Config, ConfigError};

    /// `[custom]` with `table` (its own fields), two hosts of `vms` VMs
    /// each, and one flow from `from` to `to`.
    fn two_hosts(table: &str, vms: [usize; 2], from: &str, to: &str) -> String {
        let mut s = format!("[custom]\n{table}\n");
        for n in vms {
            s.push_str("[[custom.hosts]]\n");
            for _ in 0..n {
                s.push_str("[[custom.hosts.vms]]\nmemory_mib = 4\n");
            }
        }
        s + &format!("[[custom.flows]]\nfrom = \"{from}\"\nto = \"{to}\"\nframes = 10\nlen = 100\n")
    }

    /// The field and the reason of `text`'s error.
    fn error(text: &str) -> (String, String) {
        match Config::from_toml(text) {
            Err(ConfigError::Invalid { field, reason }) => (field, reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_multi_host_form_parses_with_the_table_s_settings_as_defaults() {
        let text = "[custom]\ndemux = \"copy\"\ndata_frames = 2048\n\
                    [[custom.hosts]]\nvm_to_vm = \"bridge\"\n\
                    [[custom.hosts.vms]]\nmemory_mib = 8\nrx_descriptors = 128\n\
                    [[custom.hosts]]\ndemux = \"flip\"\ndata_frames = 8192\n\
                    [[custom.hosts.vms]]\n[[custom.hosts.vms]]\n\
                    [[custom.flows]]\nfrom = \"h0.vm0\"\nto = \"h1.vm1\"\nframes = 5\nlen = 60\n";
        let c = Config::from_toml(text).unwrap().custom;
        assert_eq!(
            c.hosts,
            Some(vec![
                HostSpec {
                    demux: DemuxMode::Copy,
                    vm_to_vm: VmToVm::Bridge,
                    data_frames: 2048,
                    vms: vec![VmSpec {
                        memory_mib: 8,
                        rx_descriptors: 128
                    }],
                },
                HostSpec {
                    demux: DemuxMode::Flip,
                    vm_to_vm: VmToVm::Crossover,
                    data_frames: 8192,
                    vms: vec![VmSpec::default(); 2],
                },
            ])
        );
        assert!(c.vms.is_empty(), "no single-host VMs: {:?}", c.vms);
        // The single-host form is as it was: the default VMs, no hosts, and
        // no `hosts` key in the report's parameters.
        let single = Config::from_toml("[custom]\nbatch = 4\n").unwrap().custom;
        assert_eq!(single.hosts, None);
        assert_eq!(single.vms, Params::default().vms);
        let json = serde_json::to_value(&single).unwrap();
        assert!(json.get("hosts").is_none(), "{json}");
    }

    #[test]
    fn multi_host_errors_name_the_field() {
        let flow = |from: &str, to: &str| two_hosts("", [2, 2], from, to);
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "[custom]\nhosts = []\n".to_owned(),
                "custom.hosts",
                "no hosts: give two `[[custom.hosts]]`",
            ),
            (
                two_hosts("", [1, 0], "h0.vm0", "h1.vm0"),
                "custom.hosts.vms",
                "h1 has 0 VMs: give 1 to 15 `[[custom.hosts.vms]]`",
            ),
            (
                "[custom]\n[[custom.hosts]]\n[[custom.hosts.vms]]\n".to_owned(),
                "custom.hosts",
                "1 host: the multi-host form joins two hosts by a cable \
                 (for one host, give `[[custom.vms]]` and no `[[custom.hosts]]`)",
            ),
            (
                "[custom]\n".to_owned() + &"[[custom.hosts]]\n[[custom.hosts.vms]]\n".repeat(3),
                "custom.hosts",
                "3 hosts: at most 2 (a cable joins two physical NICs; there is no switch between hosts)",
            ),
            (
                two_hosts("[[custom.vms]]\nmemory_mib = 4", [1, 1], "h0.vm0", "h1.vm0"),
                "custom.vms",
                "with `[[custom.hosts]]`, give each host's VMs as `[[custom.hosts.vms]]`; \
                 `[[custom.vms]]` is the single-host form",
            ),
            (
                flow("h0.vm0", "h2.vm0"),
                "custom.flows",
                "flow 0: `h2.vm0`: there is no host h2 (2 hosts)",
            ),
            (
                flow("h1.vm2", "h0.vm0"),
                "custom.flows",
                "flow 0: `h1.vm2`: h1 has 2 VMs",
            ),
            (
                flow("h1.vm1", "h1.vm1"),
                "custom.flows",
                "flow 0: from and to are both `h1.vm1`",
            ),
            (
                flow("wire", "h0.vm0"),
                "custom.flows",
                "flow 0: `wire`: with `[[custom.hosts]]` the physical NICs are cabled to each \
                 other and there is no peer on the wire; give `hN.vmM`",
            ),
            (
                flow("h0.vm0", "h1.wire"),
                "custom.flows",
                "flow 0: `h1.wire`: with `[[custom.hosts]]` the physical NICs are cabled to each \
                 other and there is no peer on the wire; give `hN.vmM`",
            ),
            (
                flow("vm0", "h1.vm0"),
                "custom.flows",
                "flow 0: `vm0` is not `hN.vmM`",
            ),
            (
                // The third VM, h1.vm0, has 1 MiB.
                flow("h0.vm0", "h1.vm1")
                    .replacen("memory_mib = 4", "memory_mib = 1", 3)
                    .replacen("memory_mib = 1", "memory_mib = 4", 2),
                "custom.hosts.vms",
                "h1.vm0: memory_mib 1 is not in 2..=64",
            ),
            (
                flow("h0.vm0", "h1.vm1").replacen(
                    "[[custom.hosts]]\n",
                    "[[custom.hosts]]\ndata_frames = 100\n",
                    1,
                ),
                "custom.hosts.data_frames",
                "h0: 100 is not in 1024..=1048576",
            ),
            (
                two_hosts("batch = 16", [1, 1], "h0.vm0", "h1.vm0")
                    .replace("memory_mib = 4", "memory_mib = 4\nrx_descriptors = 16"),
                "custom.batch",
                "16 does not fit h0.vm0's 16 receive descriptors",
            ),
        ];
        for (text, field, reason) in cases {
            assert_eq!(
                error(&text),
                (field.to_owned(), reason.to_owned()),
                "for:\n{text}"
            );
        }
        // A misspelt host field is the parser's error, naming it.
        let e = Config::from_toml("[[custom.hosts]]\ndemx = \"copy\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigError::Parse(m) if m.contains("demx")),
            "{e}"
        );
    }

    #[test]
    fn run_refuses_parameters_that_fail_their_checks() {
        let params = Params {
            hosts: Some(Vec::new()),
            vms: Vec::new(),
            ..Params::default()
        };
        let e = super::super::run(&params, &Default::default(), &mut |_, _| {}).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`custom.hosts`: no hosts: give two `[[custom.hosts]]`"
        );
    }
}
