//! What a chaos run is before it starts: the fault (its name, what it does,
//! the breaker it should open), the options, the timing, the report's name.

use crate::base;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    RedisKill,
    InstanceKill,
    RedisStall,
    RedisFlush,
    PgRestart,
    PgConnections,
    DataPlatformDown,
    DataPlatformSlow,
    RedisSlow,
    PgSlow,
    LockHolderStall,
    BrokerDown,
    BrokerStall,
}

impl Fault {
    /// `chaos all`'s order.
    pub const ALL: [Fault; 13] = [
        Fault::RedisKill,
        Fault::InstanceKill,
        Fault::RedisStall,
        Fault::RedisFlush,
        Fault::PgRestart,
        Fault::PgConnections,
        Fault::DataPlatformDown,
        Fault::DataPlatformSlow,
        Fault::RedisSlow,
        Fault::PgSlow,
        Fault::LockHolderStall,
        Fault::BrokerDown,
        Fault::BrokerStall,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::RedisKill => "redis-kill",
            Fault::InstanceKill => "instance-kill",
            Fault::RedisStall => "redis-stall",
            Fault::RedisFlush => "redis-flush",
            Fault::PgRestart => "pg-restart",
            Fault::PgConnections => "pg-connections",
            Fault::DataPlatformDown => "data-platform-down",
            Fault::DataPlatformSlow => "data-platform-slow",
            Fault::RedisSlow => "redis-slow",
            Fault::PgSlow => "pg-slow",
            Fault::LockHolderStall => "lock-holder-stall",
            Fault::BrokerDown => "broker-down",
            Fault::BrokerStall => "broker-stall",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }

    pub fn what(self) -> &'static str {
        match self {
            Fault::RedisKill => "Redis SIGKILLed, then started again, empty, on the same port",
            Fault::InstanceKill => {
                "instance #1 SIGKILLed 0.6 s into the flash sale's payments, then started again"
            }
            Fault::RedisStall => "Redis frozen with SIGSTOP, then resumed with SIGCONT",
            Fault::RedisFlush => "every Redis key wiped (FLUSHALL) in the middle of the bursts",
            Fault::PgRestart => "PostgreSQL restarted (`pg_ctl restart -m fast`)",
            Fault::PgConnections => {
                "every PostgreSQL connection of the service terminated (pg_terminate_backend), every 500 ms"
            }
            Fault::DataPlatformDown => "the data platform's receiver stops listening (connections refused)",
            Fault::DataPlatformSlow => {
                "the data platform answers after 3 s (the service's HTTP timeout is 2 s)"
            }
            Fault::RedisSlow => "250 ms added to each Redis read and write (TCP proxy in front of Redis)",
            Fault::PgSlow => {
                "100 ms added to each PostgreSQL read and write (TCP proxy in front of PostgreSQL)"
            }
            Fault::LockHolderStall => {
                "instance #1 frozen (SIGSTOP) while it holds payment locks, 13 s: past the 10 s lease"
            }
            Fault::BrokerDown => {
                "the Kafka broker (tansu) SIGKILLed, then started again on the same port and storage (Kafka mode)"
            }
            Fault::BrokerStall => {
                "the Kafka broker (tansu) frozen with SIGSTOP, then resumed with SIGCONT (Kafka mode)"
            }
        }
    }

    /// The breaker this fault should open, if any.
    pub fn breaker(self) -> Option<&'static str> {
        match self {
            Fault::RedisKill | Fault::RedisStall | Fault::RedisSlow => Some("redis"),
            Fault::DataPlatformDown | Fault::DataPlatformSlow => Some("data_platform"),
            Fault::BrokerDown | Fault::BrokerStall => Some("kafka"),
            _ => None,
        }
    }

    /// Answers from nginx (502/504) that the fault itself explains: the
    /// requests a killed or frozen instance held when it went.
    pub fn proxy_errors_expected(self) -> bool {
        matches!(self, Fault::InstanceKill | Fault::LockHolderStall)
    }

    /// Faults of the broker: the run is in Kafka mode whatever `--kafka`
    /// says, and every event must have reached every consumer group by the
    /// end (rule 6 after a broker outage).
    pub fn needs_broker(self) -> bool {
        matches!(self, Fault::BrokerDown | Fault::BrokerStall)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChaosOptions {
    pub faults: Vec<Fault>,
    pub all: bool,
    pub short: bool,
    /// A broker for every fault (the broker faults always have one).
    pub kafka: bool,
    pub server_bin: Option<PathBuf>,
    pub settings: Vec<(String, String)>,
    pub label: Option<String>,
}

/// How long and how hard one run is.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub total_s: f64,
    pub fault_at_s: f64,
    pub fault_for_s: f64,
    /// After the load: how long to wait for the backlog and the breakers.
    pub settle_s: f64,
    pub users: usize,
    pub products: usize,
    pub burst_vus: u64,
    pub sale_vus: u64,
    pub read_rate: u64,
    pub order_rate: u64,
}

impl Timing {
    pub fn new(short: bool, fault: Fault) -> Self {
        let mut t = if short {
            Self {
                total_s: 22.0,
                fault_at_s: 5.0,
                fault_for_s: 5.0,
                settle_s: 15.0,
                users: 1_000,
                products: 100,
                burst_vus: 200,
                sale_vus: 200,
                read_rate: 40,
                order_rate: 20,
            }
        } else {
            Self {
                total_s: 40.0,
                fault_at_s: 10.0,
                fault_for_s: 8.0,
                settle_s: 30.0,
                users: 2_000,
                products: 200,
                burst_vus: 300,
                sale_vus: 300,
                read_rate: 60,
                order_rate: 25,
            }
        };
        if fault == Fault::LockHolderStall {
            // Past the payment lock's 10 s lease.
            t.fault_for_s = 13.0;
            t.total_s = t.total_s.max(t.fault_at_s + t.fault_for_s + 12.0);
        }
        t
    }
}

/// Whether a run of `fault` has a broker (Kafka mode).
pub(super) fn kafka_mode(fault: Fault, opts: &ChaosOptions) -> bool {
    opts.kafka || fault.needs_broker()
}

/// The report's name: `chaos-<fault>[-kafka][-<label>]-<date>`; `-kafka`
/// marks a fault that is not the broker's run in Kafka mode.
pub(super) fn report_stem(fault: Fault, opts: &ChaosOptions, date: &str) -> String {
    let mut stem = format!("chaos-{}", fault.name());
    if opts.kafka && !fault.needs_broker() {
        stem.push_str("-kafka");
    }
    if let Some(l) = &opts.label {
        stem.push('-');
        stem.push_str(l);
    }
    format!("{stem}-{date}")
}

/// A log line of the run, `chaos:` first.
pub(super) fn log(msg: impl AsRef<str>) {
    base::log(format!("chaos: {}", msg.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(fault: Fault, kafka: bool, label: Option<&str>) -> ChaosOptions {
        ChaosOptions {
            faults: vec![fault],
            all: false,
            short: false,
            kafka,
            server_bin: None,
            settings: Vec::new(),
            label: label.map(str::to_owned),
        }
    }

    #[test]
    fn kafka_mode_for_broker_faults_and_on_request() {
        let o = opts(Fault::RedisKill, true, None);
        assert!(o.kafka && kafka_mode(Fault::RedisKill, &o));
        assert_eq!(
            report_stem(Fault::RedisKill, &o, "d"),
            "chaos-redis-kill-kafka-d"
        );
        let o = opts(Fault::BrokerDown, false, Some("x"));
        assert!(!o.kafka && kafka_mode(Fault::BrokerDown, &o));
        assert!(!kafka_mode(Fault::RedisKill, &o));
        assert_eq!(
            report_stem(Fault::BrokerDown, &o, "d"),
            "chaos-broker-down-x-d"
        );
    }

    #[test]
    fn a_lock_holder_is_frozen_past_its_lease() {
        let t = Timing::new(true, Fault::LockHolderStall);
        assert!(t.fault_for_s > 10.0);
        assert!(t.total_s >= t.fault_at_s + t.fault_for_s + 10.0);
    }
}
