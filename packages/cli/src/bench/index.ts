/** The benchmark engine behind `agentbus bench` and `npm run bench` (`import … from 'agentbus/bench'`). */

export { createBenchProgram, runBenchCli } from './bench-command.js';
export { BENCH_MIDDLEWARE, type BenchMiddleware, parseBenchMiddleware } from './bench-middleware.js';
export { BENCH_DEFAULTS, type BenchOptions, resolveBenchOptions } from './bench-options.js';
export { type BenchReport, benchReport, benchTable, middlewareFields } from './bench-report.js';
export type { BenchChannel, BenchSubject, Consumers } from './bench-subject.js';
export { type LatencyResult, measureSubject, type SubjectResult } from './phases.js';
export { runBench } from './run-bench.js';
