// WST (weak-to-strong transfer): a teacher writes instructions, a frozen student answers under
// them, the teacher is trained on the student's outcome. README "WST" has our definitions.
export { BUILTIN_TEMPLATES, TEXT_TEMPLATES, checkTemplates, parseInstruction, studentPrompt, teacherPrompt, type WstTemplates } from './templates.js';
export { localStudent, type AnswerOptions, type LocalStudentOptions, type Student, type StudentAnswer, type StudentRequest, type StudentStats } from './student.js';
export { wstEnvironment, type WstEnvironmentOptions } from './environment.js';
export { evaluateWst, writeInstructions, wstTable, type QueryRecord, type TeacherScore, type TeacherSpec, type WstEvalOptions, type WstEvalResult } from './evaluate.js';
export { builtinStudent, builtinTeacher, generateOps, opsTask, REPERTOIRE, REPERTOIRE_LIST, type OpsExample, type OpsKind } from './builtin.js';
export { runWstDemo, wstDemoTable, DEFAULT_WST_DEMO, type WstDemoOptions, type WstDemoResult } from './demo.js';
