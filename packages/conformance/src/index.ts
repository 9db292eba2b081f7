export * from './child-process.js';
export * from './context.js';
export * from './crash-soak.js';
export * from './dedup-scenario.js';
export * from './middleware-scenarios.js';
export * from './server.js';
export * from './suite.js';
export * from './wait.js';
