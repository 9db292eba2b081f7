// `npm run bench -- --transport URL …`: a thin runner; the engine lives in agentbus/bench so that
// `agentbus bench` runs exactly the same code.
import { runBenchCli } from 'agentbus/bench';

process.exitCode = await runBenchCli(process.argv.slice(2));
