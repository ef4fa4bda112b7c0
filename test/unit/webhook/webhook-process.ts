/** Moved to test/support/webhook-process.ts (shared by unit, integration, chaos and bench). */
export * from '../../support/webhook-process.ts';
