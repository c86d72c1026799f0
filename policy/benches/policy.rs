//! Criterion benchmarks: decision throughput and masking throughput.
//! Run: cargo bench -p fedgate-policy --bench policy

mod workload;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fedgate_policy::mask::consumer_key;
use fedgate_policy::{Decision, Plan};
use std::hint::black_box;

fn decisions(c: &mut Criterion) {
    let catalog = workload::catalog();
    let reqs = workload::requests(1024);
    let mut g = c.benchmark_group("decide");
    for n in [10, 1_000, 10_000] {
        let policy = workload::policy(n);
        let mut i = 0;
        g.bench_with_input(BenchmarkId::new("cached", n), &n, |b, _| {
            b.iter(|| {
                let (node, req) = &reqs[i % reqs.len()];
                i += 1;
                black_box(policy.decide(&catalog, node, req, 1_800_000_000))
            })
        });
        g.bench_with_input(BenchmarkId::new("uncached", n), &n, |b, _| {
            b.iter(|| {
                let (node, req) = &reqs[i % reqs.len()];
                i += 1;
                black_box(policy.decide_uncached(&catalog, node, req, 1_800_000_000))
            })
        });
    }
    g.finish();
}

fn masking(c: &mut Criterion) {
    let catalog = workload::catalog();
    let ds = catalog.get("ds-0").unwrap();
    let allowed = fedgate_policy::Allowed {
        grant: None,
        clearance: fedgate_catalog::Grade::new(2).unwrap(),
        rows: fedgate_policy::RowScope::All,
        fields: ds
            .fields
            .iter()
            .map(|f| {
                (
                    f.name.clone(),
                    fedgate_policy::decide::obligation(
                        f.grade,
                        &f.rule,
                        fedgate_catalog::Grade::new(2).unwrap(),
                    ),
                )
            })
            .collect(),
        quota: None,
    };
    let plan = Plan::new(ds, &allowed, consumer_key(b"secret", "police@wuxi.liangxi"));
    let rec = workload::record();
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Elements(rec.len() as u64));
    g.bench_function("record-14-fields-5-masked", |b| b.iter(|| black_box(plan.apply(black_box(&rec)))));
    g.finish();
    let _ = Decision::is_allow;
}

criterion_group!(benches, decisions, masking);
criterion_main!(benches);
